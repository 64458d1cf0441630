"""Validation with element reuse finds exactly what plain R4B validation finds.

:class:`cartwin.io._validate.ResourceValidator` validates repeated elements
once and hands the validated instances to the resource model. The check here:
on resources broken at random (seeded), a validator that has already cached
the intact elements reports the same (code, field) issues as a plain
``model_validate`` of the R4B model.
"""

from __future__ import annotations

import copy
import json
import random

import pytest
from pydantic import ValidationError

from cartwin.io._validate import ResourceValidator, _issue, model_class


def _plain_issues(resource: dict) -> list[tuple[str, str]]:
    body = {k: v for k, v in resource.items() if k != "text"}
    try:
        model_class(resource["resourceType"]).model_validate(body)
    except ValidationError as exc:
        return sorted((i.code, i.field) for i in map(_issue, exc.errors()))
    return []


def _break(resource: dict, rng: random.Random) -> dict:
    broken = copy.deepcopy(resource)
    key = rng.choice([k for k in broken if k != "resourceType"])
    roll = rng.random()
    if roll < 0.3:
        broken.pop(key)
    elif roll < 0.6 and isinstance(broken[key], dict):
        broken[key] = {**broken[key], "bogus": 1}
    elif roll < 0.8:
        broken[key] = 12345
    else:
        broken["extraElement"] = True
    return broken


def test_reuse_matches_plain_validation(cart_bundle_path):
    resources = [
        e["resource"] for e in json.loads(cart_bundle_path.read_text())["entry"]
    ]
    validator = ResourceValidator(site_utc_offset_min=None)
    assert all(validator.issues(r) == [] for r in resources)  # warm the cache
    rng = random.Random(20250101)
    found = 0
    for _ in range(10):
        for resource in resources:
            broken = _break(resource, rng)
            got = sorted((i.code, i.field) for i in validator.issues(broken))
            assert got == _plain_issues(broken), broken
            found += bool(got)
    assert found > 100  # most breaks are real errors, so the check has teeth


@pytest.mark.parametrize("offset", [None, 60])
def test_zoneless_time_with_and_without_site_offset(offset):
    resource = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "x"},
        "effectiveDateTime": "2024-01-01T10:00:00",
        "issued": "2024-01-01T11:00:00",
    }
    issues = ResourceValidator(site_utc_offset_min=offset).issues(resource)
    expected = (
        []
        if offset
        else [
            ("timestamp-no-zone", "effectiveDateTime"),
            ("timestamp-no-zone", "issued"),
        ]
    )
    assert sorted((i.code, i.field) for i in issues) == expected
