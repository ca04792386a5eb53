"""Input the database cannot take, or would compare wrongly, is the request's fault (4xx), never a 500
and never an incident that fails on every run; times go out with their UTC offset on both backends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from sqlmodel import Session, select

from agent.models import Incident
from tests.agent.api.conftest import Api, event_body, make_pending_request


def test_nul_bytes_in_events_and_chat_are_refused_at_the_door(api_any: Api) -> None:
    api = api_any
    for bad in (
        event_body("ev-\u00001"),
        event_body("ev-2", zone="z\u0000"),
        event_body("ev-3", order_ids=["o\u00001"]),
    ):
        resp = api.client.post("/events", json=bad, headers=api.h("integration"))
        assert resp.status_code == 422, resp.text
    with Session(api.engine) as s:
        assert list(s.exec(select(Incident))) == []
    resp = api.client.post("/chat/t1", json={"message": "hi\u0000"}, headers=api.h("dispatcher"))
    assert resp.status_code == 422


def test_lookups_with_values_the_database_refuses_are_4xx(api_any: Api) -> None:
    api = api_any
    rid = make_pending_request(api.engine)
    # SQLite compares such text (and finds nothing); PostgreSQL refuses it: 404/422 there, never 500
    for path in (
        "/incidents/a%00b",
        "/approvals/a%00b",
        "/world/orders/a%00b",
        "/audit/records?actor=a%00b",
        "/incidents?zone=a%00b",
    ):
        resp = api.client.get(path, headers=api.h("admin"))
        assert resp.status_code in (200, 404, 422), (path, resp.status_code, resp.text)
    for status in ("bogus", "PENDING"):
        assert api.client.get(f"/approvals?status={status}", headers=api.h("admin")).status_code == 422
    resp = api.client.post(
        f"/approvals/{rid}/steps/9223372036854775808/decision",
        json={"decision": "approve"},
        headers=api.h("supervisor"),
    )
    assert resp.status_code == 422
    listed = api.client.get("/approvals?status=all", headers=api.h("supervisor"))
    assert listed.status_code == 200 and [r["id"] for r in listed.json()] == [rid]


def test_incident_times_carry_their_offset_and_filters_honour_it(api_any: Api) -> None:
    api = api_any
    resp = api.client.post("/events", json=event_body("ev-t"), headers=api.h("integration"))
    (iid,) = resp.json()["incident_ids"]
    api.drain()
    (listed,) = api.client.get("/incidents", headers=api.h("dispatcher")).json()
    opened = datetime.fromisoformat(listed["opened_at"])
    assert listed["id"] == iid and opened.utcoffset() == timedelta(0)
    # the same moment written with three offsets selects the same incidents
    just_before = opened.astimezone(UTC) - timedelta(seconds=1)
    for offset in (0, 5, -5):
        since = just_before.astimezone(timezone(timedelta(hours=offset)))
        got = api.client.get("/incidents", params={"since": since.isoformat()}, headers=api.h("dispatcher"))
        assert [i["id"] for i in got.json()] == [iid], since.isoformat()
        later = since + timedelta(seconds=2)
        got = api.client.get("/incidents", params={"since": later.isoformat()}, headers=api.h("dispatcher"))
        assert got.json() == [], later.isoformat()


def test_the_openapi_document_lists_401_and_403_on_every_route_behind_a_token(api: Api) -> None:
    spec = api.client.get("/openapi.json").json()
    open_paths = {"/healthz", "/readyz", "/metrics"}
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            if path in open_paths:
                continue
            assert {"401", "403"} <= set(op["responses"]), (method, path)
