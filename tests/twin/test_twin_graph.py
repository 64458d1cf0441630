"""The multi-scale model graph inside a twin version (``outputs["graph"]``)."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from cartwin.demo import demo_bundle_path
from cartwin.io.fhir import import_fhir
from cartwin.record.pseudonym import DEMO_KEY
from cartwin.twin import build
from cartwin.twin.build import TwinSettings, build_twin
from cartwin.twin.graph_outputs import MAX_JSON_BYTES, json_size

NOW = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)


@pytest.fixture(scope="module")
def record():
    return import_fhir(demo_bundle_path(), key=DEMO_KEY).records[0]


@pytest.fixture(scope="module")
def graph_twin(record):
    """One calibrated demo twin with the graph (about 30 s incl. compilation)."""
    return build_twin(record, settings=TwinSettings(graph=True, n_draws=50), now=NOW)


def test_graph_output_converged_with_scenarios(graph_twin):
    graph = graph_twin.outputs["graph"]
    assert graph["status"] == "converged", graph["reason"]
    names = [s["name"] for s in graph["scenarios"]]
    # as recorded + tocilizumab grade 1 / grade 2 + dose + bridging
    assert names[0] == "as recorded" and len(names) == 5 and len(set(names)) == 5
    assert any("grade 1" in n for n in names) and any("grade 2" in n for n in names)
    assert any(n.startswith("dose") for n in names)
    # the demo record has R-GemOx bridging, so the alternative is none
    assert "no bridging" in names
    for scenario in graph["scenarios"]:
        assert scenario["endpoints"]["il6"]["peak"]["median"] > 0


def test_graph_output_is_compact_json(graph_twin):
    graph = graph_twin.outputs["graph"]
    assert 1_000 < json_size(graph) <= MAX_JSON_BYTES
    json.dumps(graph, allow_nan=False)  # no NaN or inf in stored JSON
    t = graph["t_days"]
    assert t[t.index(0.0) + 1] == 1.0  # daily to day 30 ...
    assert t[-1] - t[-2] == 7.0 and t[-1] <= 365.0  # ... then weekly
    for band in graph["series"].values():
        assert len(band["median"]) == len(band["lower"]) == len(t)


def test_graph_output_clinical_summaries(graph_twin):
    graph = graph_twin.outputs["graph"]
    assert [w["hours"] for w in graph["crs_windows"]] == [24, 48, 72]
    for window in graph["crs_windows"]:
        assert sum(window["grade_probabilities"].values()) == pytest.approx(1.0, abs=1e-3)
    outlook = graph["neutropenia"]
    severe = outlook["severe_days_to_30"]
    assert severe["lower"] <= severe["median"] <= severe["upper"]
    # recovery above 1.0 cannot come before recovery above 0.5
    assert outlook["recovery_1_0_day"]["median"] >= outlook["recovery_0_5_day"]["median"]
    hematotox = outlook["hematotox"]
    if hematotox["status"] == "ok":
        # Rejeski 2021 Table 3 group medians: low 5.5 d, high 12 d
        assert hematotox["reference_median_days"] in (5.5, 12.0)
    probs = graph["response"][0]["probabilities"]
    assert sum(probs.values()) == pytest.approx(1.0, abs=1e-6)
    verdicts = {e["verdict"] for e in graph["identifiability"].values()}
    assert verdicts <= {"informed", "weakly informed", "prior"}


def test_graph_false_is_unchanged(record, graph_twin):
    plain = build_twin(record, settings=TwinSettings(n_draws=50), now=NOW)
    assert "graph" not in plain.outputs
    assert "graph" not in plain.settings
    assert graph_twin.settings["graph"] is True
    assert plain.outputs["kinetics"] == graph_twin.outputs["kinetics"]


def test_graph_failure_keeps_the_version(record, monkeypatch):
    def broken(record, settings):
        raise build.CalibrationError("solver exploded")

    monkeypatch.setattr(build, "_graph_output", broken)
    version = build_twin(record, settings=TwinSettings(graph=True, n_draws=20), now=NOW)
    assert version.outputs["graph"]["status"] == "unavailable"
    assert "solver exploded" in version.outputs["graph"]["reason"]
    assert version.outputs["crs"]
