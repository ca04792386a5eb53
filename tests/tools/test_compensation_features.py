"""Features read from the world DB: delay estimates, weather, customer value sources."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace

import pytest
from sqlmodel import Session

from tests.tools.compensation_world import NOW, build_world
from tools.compensation import features as feat


@pytest.fixture
def world(engine) -> Iterator[Session]:
    with Session(engine, expire_on_commit=False) as s:
        build_world(s)
        s.commit()
        yield s


@pytest.fixture
def no_external_models(monkeypatch):
    """Pin the fallbacks so these tests do not depend on whether H3/H5 modules are installed."""
    monkeypatch.setattr(feat, "_eta_model_delays", lambda **kw: {})
    monkeypatch.setattr(feat, "_ltv_function", lambda: None)


def test_fallback_features_for_each_order_state(world, no_external_models):
    found, missing = feat.build_features(session=world, order_ids=["O1", "O2", "O3", "O4", "O5", "NOPE"], now=NOW)
    assert missing == {"NOPE": "unknown order 'NOPE'"}
    delay = {oid: f.features.delay_minutes for oid, f in found.items()}
    # O1 delivered 5 min early; O2 rider 3.2 km out at 320 m/min + 4 min drop-off, promised 30 min ago;
    # O3 4 + 2 + 4 min, promised in 30; O4 storm: 960 m at 0.6 speed = 5 min; O5 4 + 1 + 4, 20 late
    assert delay == {"O1": -5.0, "O2": 44.0, "O3": -20.0, "O4": 18.0, "O5": 29.0}
    assert all(f.delay_source == "estimate" for f in found.values())
    assert found["O4"].features.weather_speed_factor == pytest.approx(0.6)
    assert found["O2"].features.weather_speed_factor == 1.0
    assert found["O4"].features.channel == "phone"
    c2 = found["O2"].features
    assert (c2.tier.value, c2.compensations_count, c2.complaints_count) == ("platinum", 2, 1)
    # fallback value: 24 purchases of $40 in the trailing year; the 400-day-old one is excluded
    assert (c2.customer_value_12m_cents, c2.repurchase_per_month) == (96_000, 2.0)
    assert found["O2"].value_source == "purchase_history"
    assert found["O1"].features.customer_value_12m_cents == 0


def test_caller_delay_wins_over_estimates(world, no_external_models):
    found, _ = feat.build_features(session=world, order_ids=["O3", "O5"], now=NOW, predicted_delay_minutes={"O3": 42.5})
    assert (found["O3"].features.delay_minutes, found["O3"].delay_source) == (42.5, "argument")
    assert found["O5"].delay_source == "estimate"


def test_ltv_model_is_used_when_present(world, monkeypatch):
    monkeypatch.setattr(feat, "_eta_model_delays", lambda **kw: {})
    seen = {}

    def fake_customer_values(*, session, customer_ids, now):
        seen["ids"] = customer_ids
        return {"C2": SimpleNamespace(expected_value_12m_cents=123_456.4, repurchase_per_month=3.5)}

    monkeypatch.setattr(feat, "_ltv_function", lambda: fake_customer_values)
    found, _ = feat.build_features(session=world, order_ids=["O2", "O1"], now=NOW)
    assert seen["ids"] == ["C1", "C2"]
    assert found["O2"].value_source == "ltv_model"
    assert (found["O2"].features.customer_value_12m_cents, found["O2"].features.repurchase_per_month) == (
        123_456,
        3.5,
    )
    assert found["O1"].value_source == "purchase_history"  # customers the LTV model skipped fall back


def test_eta_model_predictions_are_read_by_delay_or_dropoff_time(world):
    order = world.get(feat.Order, "O3")
    assert feat._delay_of_prediction(SimpleNamespace(delay_minutes=12.0), order) == 12.0
    # NOW is 12:00, O3 is promised for 12:30: a drop-off at 12:45 is 15 minutes late
    later = SimpleNamespace(dropoff_at=NOW.replace(minute=45))
    assert feat._delay_of_prediction(later, order) == pytest.approx(15.0)
    assert feat._delay_of_prediction(SimpleNamespace(), order) is None
