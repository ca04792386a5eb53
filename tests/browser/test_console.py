"""Supervisor edits and approves a compensation, the incident view shows it executed; a dispatcher chats
and cannot approve."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.browser.conftest import LiveServer, save_shot, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_supervisor_edits_the_compensation_and_the_incident_shows_it_executed(
    page: Any, live_server: LiveServer
) -> None:
    incident_id = live_server.incidents["web-stalled-o3"]
    sign_in(page, live_server, "supervisor")
    request = page.locator(".request", has=page.locator(f"a[href='/console/incidents/{incident_id}']"))
    credit = request.locator(".step", has=page.locator("input[data-arg='amount_cents']"))
    amount = credit.locator("input[data-arg='amount_cents']")
    amount.wait_for()
    proposed = int(amount.input_value())
    assert proposed > 0
    assert credit.locator(".shap .bar").count() >= 2  # the SHAP factors behind the amount, as bars
    page.wait_for_function("document.querySelector('.countdown').textContent.startsWith('expires in')")
    save_shot(page, "supervisor")

    edited = proposed + 150
    index = credit.get_attribute("data-step")
    amount.fill(str(edited))
    credit.locator("button[data-action='edit']").click()
    # once decided the step is redrawn without inputs: find it by its index
    request.locator(f".step[data-step='{index}'] .badge.state-approved").wait_for()
    for button in request.locator("button[data-action='approve']").all():
        button.click()
    request.wait_for(state="detached")  # resolved: it left the queue
    live_server.app.state.worker.drain(timeout_s=60)

    view = live_server.get(f"/incidents/{incident_id}", "supervisor")
    step = next(s for s in view["steps"] if s["tool"] == "issue_compensation")
    assert step["state"] == "executed"
    order = live_server.get("/world/orders/O3", "supervisor")
    assert [c["amount_cents"] for c in order["compensations"]] == [edited]

    page.goto(f"{live_server.url}/console/incidents/{incident_id}")
    page.locator(f"#steps tr[data-step='{step['index']}'] .step-state", has_text="executed").wait_for()
    page.locator("#timeline li", has_text="decision").first.wait_for()
    page.locator("#chain-status.ok").wait_for()
    save_shot(page, "incident")


def test_dispatcher_chats_and_sees_no_approve_buttons(page: Any, live_server: LiveServer) -> None:
    sign_in(page, live_server, "dispatcher")
    page.locator("#incident-feed li").first.wait_for()
    page.fill("#chat-input", "status of order O2")
    page.click("#chat-form button[type=submit]")
    answer = page.locator(".msg.assistant.done").last
    answer.wait_for()
    text = answer.inner_text()
    assert "Order O2 is assigned" in text and "RB" in text
    save_shot(page, "dispatcher")

    page.goto(live_server.url + "/console/supervisor")
    page.locator(".request .step").first.wait_for()  # the refund for O2 is pending
    assert page.locator("button[data-action]").count() == 0
    assert page.locator("input[data-arg]").count() == 0
    assert page.locator("#bulk-approve").is_hidden()


def test_a_dispatchers_chat_thread_cannot_be_taken_by_another_user(page: Any, live_server: LiveServer) -> None:
    # the supervisor writes first in the thread name the console used to derive from the dispatcher's
    # name; the dispatcher's console keeps its own random thread, across reloads
    squat = httpx.post(
        live_server.url + "/chat/dispatch-web-dispatcher",
        json={"message": "mine now"},
        headers={"Authorization": f"Bearer {live_server.tokens['supervisor']}"},
        timeout=30,
    )
    assert squat.status_code == 200
    sign_in(page, live_server, "dispatcher")
    page.fill("#chat-input", "list open incidents")
    page.click("#chat-form button[type=submit]")
    page.locator(".msg.assistant.done").last.wait_for()
    assert "Could not reach the agent" not in page.locator("#messages").inner_text()
    page.reload()
    page.locator(".msg.user", has_text="list open incidents").wait_for()  # the same thread again


def test_an_unknown_incident_page_says_so(page: Any, live_server: LiveServer) -> None:
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    sign_in(page, live_server, "dispatcher")
    page.goto(f"{live_server.url}/console/incidents/nope-404")
    page.locator("#inc-error", has_text="nope-404").wait_for()
    assert errors == []


def test_a_double_click_sends_one_decision_even_when_the_queue_redraws_meanwhile(
    page: Any, live_server: LiveServer
) -> None:
    incident_id = live_server.incidents["web-stockout-o2"]
    posts: list[str] = []
    page.on("request", lambda r: posts.append(r.url) if r.method == "POST" and "/decision" in r.url else None)
    sign_in(page, live_server, "supervisor")
    request = page.locator(".request", has=page.locator(f"a[href='/console/incidents/{incident_id}']"))
    step = request.locator(".step", has=page.locator("button[data-action='approve']")).first
    index = step.get_attribute("data-step")
    # hold the decision in the page for a while, so the queue is redrawn while it is on its way (the live
    # feed redraws it whenever it changes): the redrawn buttons must stay disabled
    page.evaluate(
        """() => { const send = window.fetch; window.fetch = async (url, opts) => {
             if (String(url).includes('/decision')) await new Promise(r => setTimeout(r, 800));
             return send(url, opts); }; }"""
    )
    step.locator("button[data-action='approve']").dblclick()
    page.evaluate("refreshQueue()")
    redrawn = request.locator(f".step[data-step='{index}'] button[data-action='approve']")
    assert redrawn.is_disabled()
    redrawn.dispatch_event("click")  # a click on the redrawn button, disabled or not, sends nothing more
    # the answer stays in the decisions log after the resolved request has left the queue
    request.wait_for(state="detached")
    page.locator("#decisions .result.ok", has_text="Approved.").wait_for()
    page.wait_for_timeout(300)  # a second POST, if one were sent, has answered by now
    assert len(posts) == 1, posts
    assert page.locator(".result.error").count() == 0
