"""Every route checks its role server-side: a table of route x role -> expected status."""

from __future__ import annotations

import hashlib

from sqlmodel import Session, select

from agent.api.models import ApiToken
from agent.api.service import authenticate_token, create_token
from tests.agent.api.conftest import Api, event_body, make_pending_request

READERS = {"dispatcher", "supervisor", "auditor", "admin"}
ALL = {"integration", "dispatcher", "supervisor", "auditor", "admin"}
# (method, path, json body, roles allowed, status when allowed)
TABLE = [
    ("GET", "/me", None, ALL, 200),
    ("GET", "/incidents", None, READERS, 200),
    ("GET", "/incidents/inc-test0001", None, READERS, 200),
    ("GET", "/approvals", None, READERS, 200),
    ("GET", "/approvals/{rid}", None, READERS, 200),
    ("POST", "/approvals/{rid}/steps/0/decision", {"decision": "reject", "reason": "r"}, {"supervisor", "admin"}, 200),
    ("POST", "/approvals/bulk-approve", {}, {"supervisor", "admin"}, 200),
    ("GET", "/world", None, READERS, 200),
    ("GET", "/world/orders/O1", None, READERS, 200),
    ("GET", "/feed?max_events=1", None, READERS, 200),
    ("GET", "/chat/thread-{role}", None, {"dispatcher", "supervisor", "admin"}, 200),
    ("POST", "/chat/thread-{role}", {"message": "help"}, {"dispatcher", "supervisor", "admin"}, 200),
    ("GET", "/audit/records", None, {"auditor", "supervisor", "admin"}, 200),
    ("GET", "/audit/verify", None, {"auditor", "supervisor", "admin"}, 200),
    ("POST", "/events", "event", {"integration", "admin"}, 202),
]
PUBLIC = ["/healthz", "/metrics", "/console/signin", "/openapi.json"]


def test_route_role_table(api: Api) -> None:
    # one pending request per role, so each allowed decider meets a fresh step
    rids = {role: make_pending_request(api.engine, incident_id="inc-test0001") for role in ALL}
    failures = []
    for method, path, body, allowed, ok_status in TABLE:
        for role in sorted(ALL):
            url = path.replace("{rid}", rids[role]).replace("{role}", role)  # a chat thread is its author's
            payload = event_body(f"ev-{role}") if body == "event" else body
            resp = api.client.request(method, url, json=payload, headers=api.h(role))
            expected = ok_status if role in allowed else 403
            if resp.status_code != expected:
                failures.append(f"{method} {url} as {role}: {resp.status_code} != {expected}: {resp.text[:120]}")
        for headers in ({}, {"Authorization": "Bearer oa_not-a-real-token"}, {"Authorization": "Basic abc"}):
            url = path.replace("{rid}", rids["admin"]).replace("{role}", "admin")
            resp = api.client.request(method, url, json=body, headers=headers)
            if resp.status_code != 401:
                failures.append(f"{method} {path} with {headers or 'no token'}: {resp.status_code} != 401")
    for path in PUBLIC:
        if api.client.get(path).status_code != 200:
            failures.append(f"GET {path} without a token is not 200")
    api.drain()
    assert not failures, "\n".join(failures)


def test_decision_records_the_token_identity_not_the_payload(api: Api) -> None:
    rid = make_pending_request(api.engine)
    resp = api.client.post(
        f"/approvals/{rid}/steps/0/decision",
        json={"decision": "approve", "actor_id": "ceo"},
        headers=api.h("supervisor"),
    )
    assert resp.status_code == 422  # the payload cannot carry an identity at all
    resp = api.client.post(
        f"/approvals/{rid}/steps/0/decision", json={"decision": "approve"}, headers=api.h("supervisor")
    )
    assert resp.status_code == 200, resp.text
    from guardrails.models import ApprovalDecision

    with Session(api.engine) as s:
        rows = list(s.exec(select(ApprovalDecision).where(ApprovalDecision.request_id == rid)))
    assert [(r.actor_id, r.actor_role) for r in rows] == [("test-supervisor", "supervisor")]


def test_tokens_are_stored_hashed_and_revocable(api: Api) -> None:
    with Session(api.engine) as s:
        token, secret = create_token(session=s, name="ops", role="dispatcher")
        s.commit()
        stored = s.get(ApiToken, token.id)
        assert stored is not None
        assert secret not in (stored.token_hash, stored.prefix)
        assert stored.token_hash == hashlib.sha256(secret.encode()).hexdigest()
        assert len(secret) >= 40  # 32 random bytes, urlsafe
        assert authenticate_token(session=s, secret=secret) is not None
        assert authenticate_token(session=s, secret=secret + "x") is None
        stored.revoked = True
        s.add(stored)
        s.commit()
    assert api.client.get("/me", headers={"Authorization": f"Bearer {secret}"}).status_code == 401


def test_me_lists_what_the_role_can_do(api: Api) -> None:
    body = api.client.get("/me", headers=api.h("dispatcher")).json()
    assert body["name"] == "test-dispatcher" and body["role"] == "dispatcher"
    assert "decide" not in body["can"] and "chat" in body["can"]
    assert "decide" in api.client.get("/me", headers=api.h("supervisor")).json()["can"]
