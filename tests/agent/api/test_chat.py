"""Dispatcher chat over server-sent events, on the embedded engine (no model)."""

from __future__ import annotations

import json

from sqlmodel import Session, select

from agent.api.models import ChatMessage
from agent.models import IncidentEvent
from tests.agent.api.conftest import Api, make_pending_request


def ask(api: Api, text: str, thread: str = "t-1", role: str = "dispatcher") -> tuple[str, list[str]]:
    with api.client.stream("POST", f"/chat/{thread}", json={"message": text}, headers=api.h(role)) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        raw = "".join(resp.iter_text())
    events, answer = [], ""
    for frame in raw.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in frame.splitlines())
        events.append(lines["event"])
        if lines["event"] == "done":
            answer = json.loads(lines["data"])["text"]
    return answer, events


def test_status_of_an_order_streams_an_answer_and_is_stored(api: Api) -> None:
    answer, events = ask(api, "status of order O2")
    assert events[0] == "delta" and events[-1] == "done"
    assert "O2" in answer and "assigned" in answer and "RB" in answer
    with Session(api.engine) as s:
        rows = list(s.exec(select(ChatMessage).where(ChatMessage.thread_id == "t-1").order_by(ChatMessage.id)))
    assert [(r.role, r.actor_id) for r in rows] == [("user", "test-dispatcher"), ("assistant", "")]
    assert rows[1].content == answer
    history = api.client.get("/chat/t-1", headers=api.h("dispatcher")).json()
    assert [m["role"] for m in history] == ["user", "assistant"]


def test_documented_requests(api: Api) -> None:
    make_pending_request(api.engine, incident_id="inc-abcd1234")
    assert "I found no order" in ask(api, "status of order nope")[0]
    riders = ask(api, "riders near O1")[0]
    assert riders.index("RA") < riders.index("RB")  # RA is 500 m from D1, RB 1 km
    assert "RC" not in riders  # offline riders are not offered
    zone = ask(api, "available riders in zone north")[0]
    assert "1 idle" in zone and "RA" in zone
    incident = ask(api, "incident inc-abcd1234")[0]
    assert "inc-abcd1234" in incident and "issue_compensation" in incident
    assert "inc-abcd1234" in ask(api, "list open incidents")[0]
    assert "has not been compensated" in ask(api, "why was order O3 compensated?")[0]
    cannot = ask(api, "please double every rider's pay")[0]
    assert cannot.startswith("I can't do that")


def test_chat_can_open_an_incident_for_an_order(api: Api) -> None:
    answer = ask(api, "open an incident for order O3 (stalled)")[0]
    assert "incident inc-" in answer
    api.drain()
    with Session(api.engine) as s:
        (event,) = list(s.exec(select(IncidentEvent)))
    assert event.type == "stalled_in_transit"
    assert "already delivered" in ask(api, "open an incident for order O4 (late)")[0]


def test_why_compensated_reads_the_compensations(api: Api) -> None:
    from tests.tools.factories import NOW
    from tools.models import Compensation

    with Session(api.engine) as s:
        s.add(
            Compensation(
                order_id="O3",
                customer_id="C1",
                kind="credit",
                amount_cents=700,
                reason="late delivery",
                idempotency_key="k1",
                incident_id="inc-x",
                created_at=NOW,
            )
        )
        s.commit()
    answer = ask(api, "Why was order O3 compensated?")[0]
    assert "credit of 7.00 USD" in answer and "inc-x" in answer


def test_thread_ids_are_validated(api: Api) -> None:
    resp = api.client.post("/chat/bad%20id", json={"message": "hi"}, headers=api.h("dispatcher"))
    assert resp.status_code == 422
    resp = api.client.post("/chat/t", json={"message": ""}, headers=api.h("dispatcher"))
    assert resp.status_code == 422


def test_llm_mode_converses_with_read_tools_only(api: Api) -> None:
    from agent.chat import ChatEngine
    from tests.agent.fake_openai import FakeOpenAI, content, http_error, tool_call

    with FakeOpenAI() as fake:
        settings = api.app.state.settings.model_copy(
            update={"planner": "llm", "llm_base_url": fake.base_url, "llm_max_retries": 0, "llm_timeout_s": 5}
        )
        chat = ChatEngine(engine=api.engine, settings=settings)
        fake.push(
            tool_call("get_order", {"order_id": "O2"}, "c1"),
            tool_call("cancel_order", {"order_id": "O2", "reason": "x"}, "c2"),
            content("O2 is with rider RB and will be late."),
        )
        answer = "".join(chat.answer("how is O2 doing?"))
        assert answer == "O2 is with rider RB and will be late."
        offered = {t["function"]["name"] for t in fake.requests[0]["body"]["tools"]}
        assert "get_order" in offered and "cancel_order" not in offered and "issue_compensation" not in offered
        tool_msgs = [m for m in fake.requests[2]["body"]["messages"] if m["role"] == "tool"]
        assert '"order_id": "O2"' in tool_msgs[0]["content"] and '"status": "assigned"' in tool_msgs[0]["content"]
        assert "not_allowed" in tool_msgs[1]["content"]
        with Session(api.engine) as s:
            from tools.models import Order

            order = s.get(Order, "O2")
            assert order is not None and order.status == "assigned"  # the refused write never ran
        # the model being down falls back to the embedded answers, and says so
        fake.push(http_error(500))
        answer = "".join(chat.answer("status of order O2"))
        assert "Order O2 is assigned" in answer and "language model is unavailable" in answer


def test_a_thread_belongs_to_the_dispatcher_who_started_it(api: Api) -> None:
    from agent.api.models import Role
    from agent.api.service import create_token
    from tools.db import session_scope

    with session_scope(api.engine) as s:
        _, other = create_token(session=s, name="other-dispatcher", role=Role.dispatcher)
    api.tokens["other"] = other
    ask(api, "status of order O2", thread="t-own")
    # another dispatcher neither reads nor writes it, and cannot tell it exists
    assert api.client.get("/chat/t-own", headers=api.h("other")).status_code == 404
    resp = api.client.post("/chat/t-own", json={"message": "status of order O1"}, headers=api.h("other"))
    assert resp.status_code == 404
    # a supervisor may read it for a review, but not speak in it
    seen = api.client.get("/chat/t-own", headers=api.h("supervisor"))
    assert seen.status_code == 200 and [m["actor_id"] for m in seen.json()][:1] == ["test-dispatcher"]
    resp = api.client.post("/chat/t-own", json={"message": "hello"}, headers=api.h("supervisor"))
    assert resp.status_code == 404
    # the owner goes on; the other dispatcher has threads of its own
    assert ask(api, "status of order O1", thread="t-own")[1][-1] == "done"
    assert ask(api, "status of order O1", thread="t-other", role="other")[1][-1] == "done"
    with Session(api.engine) as s:
        rows = list(s.exec(select(ChatMessage).where(ChatMessage.thread_id == "t-own")))
    assert {r.actor_id for r in rows if r.role == "user"} == {"test-dispatcher"}


def test_why_compensated_explains_the_amount_of_that_order_not_the_first_in_the_plan() -> None:
    from agent.chat import _shap_from_records

    def comp(order: str, label: str) -> dict:
        return {
            "tool": "issue_compensation",
            "args": {"order_id": order, "kind": "coupon", "amount_cents": 500},
            "explanation": {"top_factors": [{"label": label, "share_pct": 50.0, "direction": "+"}]},
        }

    proposal = {"stage": "proposal", "steps": [comp("o0", "o0's factor"), comp("o2", "o2's factor")]}
    assert _shap_from_records([proposal], "o2")[0]["label"] == "o2's factor"
    assert _shap_from_records([proposal], "o0")[0]["label"] == "o0's factor"
    assert _shap_from_records([proposal], "o9") == []


def test_opening_an_incident_reads_words_and_asks_when_two_kinds_are_named(api: Api) -> None:
    answer = ask(api, "open an incident for order O3 - stockout, the customer will be late")[0]
    assert "Ask again" in answer and "stockout after payment" in answer and "order late risk" in answer
    answer = ask(api, "open an incident for order O3, please escalate (stalled)")[0]  # not "late"
    assert "stalled in transit" in answer and "Opened" in answer


def test_questions_about_open_incidents_open_nothing_and_ids_end_before_punctuation(api: Api) -> None:
    from sqlmodel import Session, func, select

    from agent.models import IncidentEvent

    def events() -> int:
        with Session(api.engine) as s:
            return s.exec(select(func.count()).select_from(IncidentEvent)).one()

    before = events()
    for question in ("Is there an open incident for order O3?", "which open incident is order O3 in?"):
        assert "Opened" not in ask(api, question)[0]
    assert events() == before
    assert "I found no order" not in ask(api, "status of order O2.")[0]


def test_why_compensated_names_only_the_approvers_of_that_orders_compensation() -> None:
    from agent.chat import _comp_approvers

    def comp(index: int, order: str) -> dict:
        return {"index": index, "tool": "issue_compensation", "args": {"order_id": order, "amount_cents": 900}}

    proposal = {
        "stage": "proposal",
        "incident_id": "inc-1",
        "steps": [comp(0, "o1"), comp(1, "o2"), {"index": 2, "tool": "cancel_order", "args": {"order_id": "o1"}}],
    }

    def decision(index: int, who: str, kind: str = "approve", incident: str = "inc-1") -> dict:
        return {
            "stage": "decision",
            "incident_id": incident,
            "approver_id": who,
            "steps": [{"index": index, "decision": kind}],
        }

    records = [
        proposal,
        decision(0, "sup-a"),
        decision(0, "sup-b", "edit"),
        decision(1, "sup-c"),  # another order's refund
        decision(2, "sup-d"),  # the cancellation of the same order, not its compensation
        decision(0, "sup-e", "reject"),
        decision(0, "sup-f", incident="inc-2"),  # step 0 of another incident
    ]
    assert _comp_approvers(records, "o1") == ["sup-a", "sup-b"]
    assert _comp_approvers(records, "o2") == ["sup-c"]
    assert _comp_approvers(records, "o3") == []
