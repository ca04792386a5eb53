"""Every route checks its role server-side: a table of route x role -> expected status. Tokens are
cached for ``auth_cache_s``: revoking through the cache is immediate, elsewhere within the TTL."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from agent.api import deps, service
from agent.api.app import create_app
from agent.api.models import ApiToken, Principal, Role
from agent.api.service import TokenCache, authenticate_token, create_token, hash_token, revoke_token
from tests.agent.api.conftest import Api, event_body, make_pending_request, settings_for
from tools.db import session_scope

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


# ---- the token cache --------------------------------------------------------------------------


class FakeMonotonic:
    """Stands in for the ``time`` module inside agent.api.service: the token cache's clock only."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def cache_clock(monkeypatch: pytest.MonkeyPatch) -> FakeMonotonic:
    fake = FakeMonotonic()
    monkeypatch.setattr(service, "time", fake)
    return fake


@pytest.fixture
def lookups(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The secrets get_principal looked up in the database, in order."""
    seen: list[str] = []
    real: Callable[..., Principal | None] = deps._lookup_principal

    def counting(engine: object, secret: str) -> Principal | None:
        seen.append(secret)
        return real(engine, secret)

    monkeypatch.setattr(deps, "_lookup_principal", counting)
    return seen


def new_token(api: Api, role: Role = Role.dispatcher) -> tuple[int, str]:
    with session_scope(api.engine) as s:
        token, secret = create_token(session=s, name=f"cache-{role.value}", role=role)
        assert token.id is not None
        return token.id, secret


def me(client: TestClient, secret: str) -> int:
    return client.get("/me", headers={"Authorization": f"Bearer {secret}"}).status_code


def revoke_in_db(api: Api, token_id: int, cache: TokenCache | None = None) -> None:
    with session_scope(api.engine) as s:
        assert revoke_token(session=s, token_id=token_id, cache=cache)


def test_a_token_is_read_from_the_database_once_then_from_the_cache(api: Api, lookups: list[str]) -> None:
    _, secret = new_token(api)
    assert [me(api.client, secret) for _ in range(3)] == [200, 200, 200]
    assert lookups == [secret]


def test_revoking_through_the_cache_takes_effect_on_the_next_request(api: Api, lookups: list[str]) -> None:
    cache: TokenCache = api.app.state.token_cache
    token_id, secret = new_token(api)
    _, other = new_token(api)
    assert me(api.client, secret) == 200 and me(api.client, other) == 200
    assert cache.get(hash_token(secret)) is not None

    revoke_in_db(api, token_id, cache=cache)

    assert me(api.client, secret) == 401
    assert me(api.client, other) == 200  # only the revoked token left the cache
    assert lookups == [secret, other, secret]


def test_a_revocation_elsewhere_takes_effect_when_the_cache_entry_expires(api: Api, cache_clock: FakeMonotonic) -> None:
    ttl = api.app.state.token_cache.ttl_s
    assert ttl > 0
    token_id, secret = new_token(api)
    assert me(api.client, secret) == 200  # cached from here
    revoke_in_db(api, token_id)  # another process: the database only

    cache_clock.advance(ttl - 0.01)
    assert me(api.client, secret) == 200
    cache_clock.advance(0.02)
    assert me(api.client, secret) == 401


def test_auth_cache_zero_reads_the_database_on_every_request(api: Api, lookups: list[str]) -> None:
    app = create_app(settings_for(api.engine, auth_cache_s=0), engine=api.engine, clock=api.clock, background=False)
    with TestClient(app) as client:
        token_id, secret = new_token(api)
        assert [me(client, secret) for _ in range(3)] == [200, 200, 200]
        assert lookups == [secret] * 3
        revoke_in_db(api, token_id)  # without the cache: nothing cached to outlive it
        assert me(client, secret) == 401
    assert app.state.token_cache._items == {}


def test_an_unknown_secret_is_looked_up_every_time_and_never_cached(api: Api, lookups: list[str]) -> None:
    bogus = "oa_not-a-real-token"
    assert [me(api.client, bogus) for _ in range(2)] == [401, 401]
    assert lookups == [bogus, bogus]
    assert api.app.state.token_cache._items == {}


def _principal(token_id: int) -> Principal:
    return Principal(token_id=token_id, name=f"t{token_id}", role=Role.dispatcher)


def test_the_cache_holds_at_most_size_tokens_dropping_the_oldest(cache_clock: FakeMonotonic) -> None:
    cache = TokenCache(ttl_s=60, size=3)
    for i in range(5):
        cache.put(f"d{i}", _principal(i))
        cache_clock.advance(1)
    assert len(cache._items) == 3
    assert [cache.get(f"d{i}") is not None for i in range(5)] == [False, False, True, True, True]


def test_cache_entries_expire_after_the_ttl(cache_clock: FakeMonotonic) -> None:
    cache = TokenCache(ttl_s=2)
    cache.put("d", _principal(1))
    cache_clock.advance(1.99)
    assert cache.get("d") == _principal(1)
    cache_clock.advance(0.01)
    assert cache.get("d") is None
    assert cache._items == {}  # an expired entry is removed, not kept


def test_drop_token_removes_that_token_only() -> None:
    cache = TokenCache(ttl_s=60)
    cache.put("a", _principal(1))
    cache.put("b", _principal(2))
    cache.drop_token(1)
    assert cache.get("a") is None and cache.get("b") == _principal(2)


def test_a_zero_ttl_cache_keeps_nothing() -> None:
    cache = TokenCache(ttl_s=0)
    cache.put("d", _principal(1))
    assert cache.get("d") is None


def test_a_revoked_token_ends_the_live_feed(api: Api) -> None:
    import time

    events: list[str] = []
    deadline = time.monotonic() + 10  # the stream sends a keep-alive every 0.2 s: the loop cannot hang
    with api.client.stream("GET", "/feed?interval_s=0.2", headers=api.h("auditor")) as resp:
        assert resp.status_code == 200
        for line in resp.iter_lines():
            if time.monotonic() > deadline:
                break
            if not line.startswith("event:"):
                continue
            events.append(line)
            if events == ["event: state"]:  # the stream is open: revoke the token it was opened with
                with Session(api.engine) as s:
                    token = s.exec(
                        select(ApiToken).where(ApiToken.token_hash == hash_token(api.tokens["auditor"]))
                    ).one()
                    assert token.id is not None
                    revoke_token(session=s, token_id=token.id, cache=api.app.state.token_cache)
                    s.commit()
            if len(events) > 5:
                break
    assert events == ["event: state", "event: revoked"]
