"""The caches behind the storm's speed give the same answers as computing afresh."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlmodel import Session

from tests.tools.factories import NOW, build_small_world
from tests.tools.test_customer_value import NOW as LTV_NOW
from tests.tools.test_customer_value import _synthetic_world
from tools.customers import value as ltv
from tools.db import init_db, make_engine
from tools.orders.eta import PredictionCache, predict_dropoffs


def test_prediction_cache_matches_and_follows_the_clock(engine: Engine) -> None:
    with Session(engine, expire_on_commit=False) as s:
        build_small_world(s)
        cache = PredictionCache()
        first = cache.predict(session=s, now=NOW)
        assert first == predict_dropoffs(session=s, now=NOW) and first
        assert cache.predict(session=s, now=NOW) is first  # same clock: no second simulation
        later = cache.predict(session=s, now=NOW + timedelta(minutes=5))
        assert later == predict_dropoffs(session=s, now=NOW + timedelta(minutes=5))
        assert later != first
        cache.clear()
        assert cache.predict(session=s, now=NOW) == first and cache.predict(session=s, now=NOW) is not first


def test_fit_is_shared_by_copies_of_the_same_histories(tmp_path: Path) -> None:
    ltv.clear_cache()
    models = []
    values = []
    for name in ("a", "b"):
        eng = make_engine(f"sqlite:///{tmp_path / name}.db")
        init_db(eng)
        with Session(eng) as s:
            _synthetic_world(s, 300)
            s.commit()
            models.append(ltv.population_model(session=s, now=LTV_NOW))
            values.append(ltv.customer_values(session=s, customer_ids=["w0001", "w0002"], now=LTV_NOW))
        eng.dispose()
    assert models[0].source == "world"
    assert models[1] is models[0]  # found by content, not refitted
    assert values[1] == values[0]
    # other histories (another seed) are another model
    eng = make_engine(f"sqlite:///{tmp_path / 'c'}.db")
    init_db(eng)
    with Session(eng) as s:
        _synthetic_world(s, 300, seed=2)
        s.commit()
        assert ltv.population_model(session=s, now=LTV_NOW) is not models[0]
    eng.dispose()
