"""POST /events: 202 with incident ids, idempotent by id, malformed or oversized input stores nothing."""

from __future__ import annotations

import json
from typing import Any

from sqlmodel import Session, select

from agent.api.service import table_counts
from agent.models import Incident, IncidentEvent
from tests.agent.api.conftest import Api, event_body


def _counts(api: Api) -> dict[str, int]:
    with Session(api.engine) as s:
        return table_counts(session=s)


def _events(api: Api) -> list[IncidentEvent]:
    with Session(api.engine) as s:
        return list(s.exec(select(IncidentEvent)))


def test_one_event_is_accepted_and_the_incident_runs_in_the_background(api: Api) -> None:
    resp = api.client.post("/events", json=event_body("ev-1"), headers=api.h("integration"))
    assert resp.status_code == 202, resp.text
    body = resp.json()
    assert body["accepted"] == 1 and body["duplicates"] == 0
    (incident_id,) = body["incident_ids"]
    api.drain()
    with Session(api.engine) as s:
        incident = s.get(Incident, incident_id)
        assert incident is not None
        # the worker ran the graph: the incident moved past "open" and has a plan
        assert incident.status != "open"
        assert incident.plan is not None
    detail = api.client.get(f"/incidents/{incident_id}", headers=api.h("dispatcher")).json()
    assert detail["incident"]["id"] == incident_id
    assert [s["index"] for s in detail["steps"]] == list(range(len(detail["steps"])))
    assert all("state" in s for s in detail["steps"])
    assert any(r["stage"] == "intake" for r in detail["timeline"])


def test_a_list_is_accepted_and_repeats_are_idempotent(api_any: Api) -> None:
    api = api_any
    batch = [event_body("ev-a"), event_body("ev-b", order_ids=["O2"], rider_ids=["RB"], customer_ids=["C2"])]
    first = api.client.post("/events", json=batch, headers=api.h("integration")).json()
    assert first["accepted"] == 2
    again = api.client.post("/events", json=batch, headers=api.h("admin")).json()
    assert again["accepted"] == 0 and again["duplicates"] == 2
    assert again["incident_ids"] == first["incident_ids"]
    api.drain()
    assert sorted(e.event_id for e in _events(api)) == ["ev-a", "ev-b"]


def test_malformed_events_are_422_with_field_errors_and_nothing_is_stored(api: Api) -> None:
    before = _counts(api)
    cases = [
        event_body("ev-x", type="meteor_strike"),  # unknown type
        event_body("ev-x", occurred_at="2024-06-01T12:00:00"),  # naive time
        event_body("ev-x", order_ids="O1"),  # wrong type
        {k: v for k, v in event_body("ev-x").items() if k != "type"},  # missing field
        event_body("ev-x", priority=3),  # unknown field
        [event_body("ev-ok"), event_body("ev-bad", zone=5)],  # one bad event fails the whole batch
        [],
        "not an object",
    ]
    for body in cases:
        resp = api.client.post("/events", json=body, headers=api.h("integration"))
        assert resp.status_code == 422, (body, resp.text)
        assert resp.json()["detail"], body
    resp = api.client.post(
        "/events", content=b"{not json", headers={**api.h("integration"), "Content-Type": "application/json"}
    )
    assert resp.status_code == 422
    detail = api.client.post("/events", json=cases[2], headers=api.h("integration")).json()["detail"]
    assert any("order_ids" in [str(p) for p in err["loc"]] for err in detail)
    assert _counts(api) == before


def test_oversized_bodies_are_refused_before_parsing(api: Api) -> None:
    big = event_body("ev-big", payload={"blob": "x" * 70_000})
    resp = api.client.post("/events", json=big, headers=api.h("integration"))
    assert resp.status_code == 413

    def chunks():  # no Content-Length: the limit is counted as the body arrives
        yield b'{"id": "ev-chunked", "payload": {"blob": "'
        for _ in range(100):
            yield b"y" * 1000
        yield b'"}}'

    resp = api.client.post(
        "/events", content=chunks(), headers={**api.h("integration"), "Content-Type": "application/json"}
    )
    assert resp.status_code == 413
    assert _events(api) == []


def test_deeply_nested_json_is_refused(api: Api) -> None:
    nested: object = "leaf"
    for _ in range(200):
        nested = {"a": nested}
    resp = api.client.post("/events", json=event_body("ev-deep", payload={"n": nested}), headers=api.h("integration"))
    assert resp.status_code == 422
    assert "nested" in resp.json()["detail"]
    # brackets inside strings do not count
    text = json.dumps(event_body("ev-str", payload={"note": "[" * 500}))
    resp = api.client.post(
        "/events", content=text, headers={**api.h("integration"), "Content-Type": "application/json"}
    )
    assert resp.status_code == 202, resp.text
    api.drain()


def test_incident_list_filters(api: Api) -> None:
    (incident_id,) = api.client.post("/events", json=event_body("ev-f"), headers=api.h("integration")).json()[
        "incident_ids"
    ]
    api.drain()

    def ids(query: str) -> list[str]:
        resp = api.client.get(f"/incidents?{query}", headers=api.h("dispatcher"))
        assert resp.status_code == 200, resp.text
        return [i["id"] for i in resp.json()]

    assert ids("type=stalled_in_transit&zone=north") == [incident_id]
    assert ids("zone=south") == [] and ids("type=rider_offline") == []
    status = api.client.get(f"/incidents/{incident_id}", headers=api.h("dispatcher")).json()["incident"]["status"]
    other = "escalated" if status != "escalated" else "resolved"
    assert ids(f"status={status}") == [incident_id] and ids(f"status={other}") == []
    assert ids("since=2024-06-01T11:00:00Z&until=2030-01-01T00:00:00Z") == [incident_id]
    assert ids("until=2024-06-01T11:00:00Z") == []
    assert api.client.get("/incidents?status=bogus", headers=api.h("dispatcher")).status_code == 422
    assert api.client.get("/incidents/inc-nope", headers=api.h("dispatcher")).status_code == 404


def test_text_cut_in_half_by_a_client_is_stored_repaired_not_refused(api: Api) -> None:
    # valid JSON, but "\ud83d" alone (half an emoji) is not UTF-8: it could be neither stored nor hashed
    body = event_body("ev-surrogate", type="customer_complaint")
    body["payload"] = {"text": "cold food PLACEHOLDER", "nested": ["ok PLACEHOLDER"]}
    raw = json.dumps(body).replace("PLACEHOLDER", "\\ud83d")
    resp = api.client.post("/events", content=raw, headers={**api.h("integration"), "Content-Type": "application/json"})
    assert resp.status_code == 202, resp.text
    api.drain()
    (stored,) = [e for e in _events(api) if e.event_id == "ev-surrogate"]
    assert stored.event["payload"] == {"text": "cold food \ufffd", "nested": ["ok \ufffd"]}
    # an id or other typed text field with one is refused outright, and nothing is stored
    bad = json.dumps(event_body("ev-bad-PLACEHOLDER")).replace("PLACEHOLDER", "\\ud83d")
    refused = api.client.post(
        "/events", content=bad, headers={**api.h("integration"), "Content-Type": "application/json"}
    )
    assert refused.status_code == 422
    assert not [e for e in _events(api) if e.event_id.startswith("ev-bad")]


def test_a_database_that_gives_up_first_is_503_with_retry_after(api: Api, monkeypatch: Any) -> None:
    from sqlalchemy.exc import OperationalError

    async def locked(*_: Any, **__: Any) -> Any:
        raise OperationalError("INSERT ...", {}, Exception("database is locked"))

    monkeypatch.setattr(api.app.state.worker, "submit_async", locked)
    resp = api.client.post("/events", json=event_body("ev-busy"), headers=api.h("integration"))
    assert resp.status_code == 503 and resp.headers["Retry-After"] == "1"
