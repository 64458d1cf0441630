"""The "Multi-scale model" section of the report (cartwin.report.graph_section)."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from cartwin.demo import demo_bundle_path
from cartwin.io.fhir import import_fhir
from cartwin.record.pseudonym import DEMO_KEY
from cartwin.report import render_report
from cartwin.report.graph_section import NOT_RUN
from cartwin.twin.build import TwinSettings, build_twin

NOW = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)


@pytest.fixture(scope="module")
def demo():
    record = import_fhir(demo_bundle_path(), key=DEMO_KEY).records[0]
    version = build_twin(record, settings=TwinSettings(graph=True, n_draws=50), now=NOW)
    return record, version


def _section(page: str) -> str:
    start = page.index('<section id="graph">')
    return page[start:page.index("</section>", start)]


def test_section_renders_every_part(demo):
    record, version = demo
    section = _section(render_report(record, version))
    for heading in ("Multi-scale model", "CRS grade probabilities", "Neutropenia outlook",
                    "Response probabilities", "Scenarios side by side", "Identifiability"):
        assert heading in section
    assert section.count("<svg") == 2  # bands and scenario overlay
    for scenario in version.outputs["graph"]["scenarios"]:
        assert scenario["name"] in section
    assert "×10⁹/L" in section and "10*9/L" not in section  # human units
    assert "cart_tumour.k_ld" in section


def test_section_is_deterministic(demo):
    record, version = demo
    assert render_report(record, version) == render_report(record, version)


def test_without_graph_no_section(demo):
    # versions built without --graph keep the report's sections unchanged
    record, version = demo
    outputs = {k: v for k, v in version.outputs.items() if k != "graph"}
    page = render_report(record, dataclasses.replace(version, outputs=outputs))
    assert '<section id="graph">' not in page and NOT_RUN not in page
    assert '<section id="provenance">' in page


def test_failed_graph_shows_the_reason_escaped(demo):
    record, version = demo
    outputs = {**version.outputs,
               "graph": {"status": "unavailable", "reason": "bad <value> & more"}}
    section = _section(render_report(record, dataclasses.replace(version, outputs=outputs)))
    assert "bad &lt;value&gt; &amp; more" in section
