import json

import jsonschema
import pytest

from evals.case import CASES_DIR, IncidentCase, json_schema, load_cases
from tools.events import ExceptionType


def test_every_case_file_is_valid_against_the_model_and_the_published_schema():
    schema = json.loads((CASES_DIR.parent / "case.schema.json").read_text())
    assert schema == json_schema(), "evals/case.schema.json is stale: run `orderagent eval schema`"
    for path in sorted(CASES_DIR.glob("*.json")):
        data = json.loads(path.read_text())
        jsonschema.validate(data, schema)
        assert IncidentCase.model_validate(data).id == path.stem


def test_the_library_covers_what_the_issue_names():
    cases = load_cases("all")
    assert len(cases) >= 40
    tags = {t for c in cases for t in c.tags}
    injected = {e.inject for c in cases for e in c.events if e.inject}
    simulated = {t.value for t in ExceptionType} - {"rider_shortage"}  # the storm preset emits that family
    assert simulated <= injected | tags
    assert {0, 1, 2} <= {c.policy_tier for c in cases}
    for needed in ("prompt_injection", "refund_history", "high_value", "conflict", "stale", "duplicates", "expiry"):
        assert needed in tags, needed
    storm = next(c for c in cases if c.id == "storm-reference")
    assert storm.world.preset == "storm"
    assert len(load_cases("real")) >= 4 and all(c.world.mdrp for c in load_cases("real"))
    assert len(load_cases("gate")) >= 8


def test_a_case_needs_exactly_one_world_source():
    base = json.loads((CASES_DIR / "storm-reference.json").read_text())
    base["world"] = {"preset": "storm", "mdrp": "0o100t100s1p100"}
    with pytest.raises(ValueError):
        IncidentCase.model_validate(base)
