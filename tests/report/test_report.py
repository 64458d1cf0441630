"""Tests of the standalone HTML report (cartwin.report)."""

from __future__ import annotations

import datetime as dt
import logging
import re
from html.parser import HTMLParser

import pytest

from cartwin.record.model import Event, Observation, PatientFacts, PatientRecord
from cartwin.report import render_report, write_report
from cartwin.report import html as report_html
from cartwin.report import plots
from cartwin.twin.version import OUTPUT_KEYS, TwinVersion

UTC = dt.timezone.utc
PSEUDONYM = "a1b2c3d4e5f60789"
INFUSION = dt.datetime(2024, 1, 15, 9, 30, tzinfo=UTC)  # 10:30 at the site (+01:00)
HEADINGS = [
    "Patient",
    "Treatment journey",
    "CAR T kinetics",
    "Clinical scores",
    "Laboratory trajectories",
    "Cytokine release syndrome (CRS)",
    "Immune effector cell-associated neurotoxicity (ICANS)",
    "Provenance",
]
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta",
        "source", "track", "wbr"}


def at(days: float) -> dt.datetime:
    return INFUSION + dt.timedelta(days=days)


def iso(days: float) -> str:
    return at(days).isoformat()


def make_record(*, infusion: bool = True, diagnosis: str = "Diffuse large B-cell "
                "lymphoma") -> PatientRecord:
    facts = PatientFacts(
        pseudonym=PSEUDONYM, age_years=61, sex="male", diagnosis=diagnosis,
        diagnosis_code="http://hl7.org/fhir/sid/icd-10-cm|C83.30", disease="LBCL",
        product="axicabtagene ciloleucel")
    obs = [Observation("cart_flow", at(-0.05), 1.0, "/uL", censored="below"),
           Observation("cart_flow", at(7), 25.0, "/uL"),
           Observation("cart_flow", at(14), 40.0, "/uL"),
           Observation("cart_flow", at(28), 5.0, "/uL"),
           Observation("cart_flow", at(60), 1.0, "/uL", censored="below")]
    labs = {"crp": (12, 15, 150, 20, 5), "ferritin": (950, 1000, 3000, 2000, 1100),
            "ldh": (310, 280, 400, 330, 260), "platelets": (140, 100, 80, 50, 40),
            "anc": (1.9, 0.3, 0.03, 0.05, 1.1), "hemoglobin": (10.8, 10, 9.5, 8.6, 8.8),
            "creatinine": (0.88, 0.86, 1.2, 0.92, 0.88)}
    units = {"crp": "mg/L", "ferritin": "ng/mL", "ldh": "U/L", "platelets": "10*9/L",
             "anc": "10*9/L", "hemoglobin": "g/dL", "creatinine": "mg/dL"}
    for quantity, values in labs.items():
        for day, value in zip((-6, 0, 3, 7, 14), values):
            obs.append(Observation(quantity, at(day - 0.2), value, units[quantity]))
    for half_days in range(0, 16):
        fever = 4 <= half_days <= 6
        celsius = 38.9 if fever else 36.8
        obs.append(Observation("temperature", at(half_days / 2), celsius, "Cel"))
    obs += [Observation("ice_score", at(d), 8.0 if d == 6 else 10.0, "{score}")
            for d in range(1, 10)]
    events = [Event("leukapheresis", at(-35), at(-34.8)),
              Event("lymphodepletion", at(-5), at(-4.9), name="fludarabine",
                    dose=30, dose_unit="mg/m2"),
              Event("tocilizumab", at(3), at(3.04), name="tocilizumab", dose=624,
                    dose_unit="mg"),
              Event("oxygen", at(3.1), at(5), name="nasal cannula", detail="low_flow"),
              Event("corticosteroid", at(6.1), name="dexamethasone", dose=10,
                    dose_unit="mg")]
    if infusion:
        events.append(Event("infusion", INFUSION, at(0.01), name="axicabtagene "
                            "ciloleucel", dose=1.56e8, dose_unit="{cells}",
                            source_utc_offset_min=60))
    return PatientRecord(facts=facts, observations=tuple(obs), events=tuple(events),
                         site_utc_offset_min=60)


def make_outputs() -> dict:
    t_days = [0.0, 3.0, 7.0, 10.0, 14.0, 28.0, 60.0, 90.0]
    median = [1.5, 8.0, 30.0, 44.0, 38.0, 5.0, 0.8, 0.3]
    hematotox_inputs = [
        {"name": q, "value": v, "unit": u, "time": iso(-6.2), "study_day": -6,
         "source_id": f"Observation/{q}-pre", "censored": None}
        for q, v, u in (("platelets", 140.0, "10*9/L"), ("anc", 1.9, "10*9/L"),
                        ("hemoglobin", 10.8, "g/dL"), ("crp", 12.0, "mg/L"),
                        ("ferritin", 950.0, "ng/mL"))]
    return {
        "kinetics": {
            "quantity": "cart_flow", "unit": "/uL", "status": "ok", "reason": "",
            "n_obs": 5, "n_censored": 2, "t_days": t_days, "median": median,
            "lower": [m / 2 for m in median], "upper": [m * 2 for m in median],
            "interval": 0.9,
            "derived": {
                "cmax": {"median": 45.3, "lower": 30.1, "upper": 70.2, "unit": "/uL"},
                "tmax": {"median": 10.2, "lower": 8.0, "upper": 13.5, "unit": "d"},
                "auc0_28": {"median": 171774.2, "lower": 90000.0, "upper": 250000.0,
                            "unit": "/uL.d"}},
            "parameters": {"alpha": {"map": 0.16, "median": 0.17, "lower": 0.1,
                                     "upper": 0.3, "unit": "/d"}}},
        "scores": [
            {"name": "CAR-HEMATOTOX", "value": 2, "category": "high",
             "inputs": hematotox_inputs, "missing": [], "window": [-12, -5],
             "reference": "Rejeski 2021 doi:10.1182/blood.2020010543", "message": ""},
            {"name": "EASIX", "value": None, "category": None, "inputs": [],
             "missing": ["creatinine"], "window": [-12, -5],
             "reference": "Pennisi 2021",
             "message": "no creatinine in days -12 to -5"}],
        "crs": {
            "timeline": [
                {"time": iso(0.5), "study_day": 0, "grade": 0, "reasons": []},
                {"time": iso(2.0), "study_day": 2, "grade": 1,
                 "reasons": ["fever 38.9 Cel"]},
                {"time": iso(3.1), "study_day": 3, "grade": 2,
                 "reasons": ["low-flow oxygen"]},
                {"time": iso(5.0), "study_day": 5, "grade": 0, "reasons": []}],
            "daily_max": [{"study_day": d, "grade": g} for d, g in
                          ((0, 0), (1, 0), (2, 1), (3, 2), (4, 2), (5, 2), (6, 0))],
            "max_grade": 2},
        "icans": {
            "timeline": [{"time": iso(d), "study_day": d, "grade": 1 if d == 6 else 0,
                          "reasons": [f"ICE score {8 if d == 6 else 10}"]}
                         for d in range(1, 10)],
            "daily_max": [{"study_day": d, "grade": 1 if d == 6 else 0}
                          for d in range(1, 10)],
            "max_grade": 1},
        "journey": [
            {"phase": "leukapheresis", "start": iso(-35), "end": iso(-34.8),
             "study_day_start": -35, "study_day_end": -35},
            {"phase": "lymphodepletion", "start": iso(-5), "end": iso(-4.9),
             "study_day_start": -5, "study_day_end": -5},
            {"phase": "infusion", "start": iso(0), "end": iso(0.01),
             "study_day_start": 0, "study_day_end": 0},
            {"phase": "acute phase", "start": iso(0), "end": iso(28),
             "study_day_start": 0, "study_day_end": 28}],
    }


def make_version(
    outputs: dict | None = None, pseudonym: str = PSEUDONYM
) -> TwinVersion:
    return TwinVersion(
        pseudonym=pseudonym, created_at=dt.datetime(2024, 3, 1, 12, tzinfo=UTC),
        data_hash="ab" * 32, model_name="multiphasic-kinetics", model_version="1",
        package_version="0.1.0", settings={"seed": 7, "interval": 0.9},
        posterior={"method": "laplace", "status": "ok"},
        outputs=make_outputs() if outputs is None else outputs,
        parent_id="0123456789abcdef")


class Structure(HTMLParser):
    """Collects tags, attributes, headings and nesting errors of a page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.attrs: list[tuple[str, str, str]] = []
        self.tags: list[str] = []
        self.h2: list[str] = []
        self._in_h2 = False

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs += [(tag, k, v or "") for k, v in attrs]
        if tag == "h2":
            self._in_h2, self._text = True, ""
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs += [(tag, k, v or "") for k, v in attrs]

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:]}")
            return
        self.stack.pop()
        if tag == "h2":
            self.h2.append(self._text.strip())
            self._in_h2 = False

    def handle_data(self, data):
        if self._in_h2:
            self._text += data


def parse(page: str) -> Structure:
    parser = Structure()
    parser.feed(page)
    parser.close()
    return parser


@pytest.fixture(scope="module")
def page() -> str:
    return render_report(make_record(), make_version())


def test_page_is_well_formed_html(page):
    structure = parse(page)
    assert page.startswith("<!DOCTYPE html>")
    assert structure.errors == [] and structure.stack == []
    assert structure.tags[0] == "html"


def test_page_loads_nothing_from_the_network(page):
    structure = parse(page)
    links = [v for _, k, v in structure.attrs
             if k in ("src", "href", "xlink:href", "action", "srcset", "poster")]
    assert links  # nav anchors and SVG <use> references exist...
    assert all(v.startswith("#") for v in links)  # ...and all are in-page
    assert not {"script", "link", "img", "iframe", "object"} & set(structure.tags)
    assert "@import" not in page and not re.search(r"url\(\s*['\"]?(https?:)?//", page)


def test_page_shows_pseudonym_and_no_direct_identifier(page):
    assert PSEUDONYM in page
    assert "Synthetic Demo" not in page and "birth" not in page.lower()


def test_page_has_the_clinical_sections_in_order(page):
    assert parse(page).h2 == HEADINGS


def test_plots_are_inline_svg_with_unique_ids(page):
    structure = parse(page)
    assert structure.tags.count("svg") == 5  # journey, kinetics, labs, CRS, ICANS
    ids = [v for _, k, v in structure.attrs if k == "id"]
    assert len(ids) == len(set(ids))
    assert "days since CAR T infusion" in page  # x axis of every time plot


def test_kinetics_table_shows_derived_values_with_intervals_and_units(page):
    assert re.search(r"<td>Cmax</td>\s*<td class=\"num\">45.3</td>\s*"
                     r"<td class=\"num\">30.1 – 70.2</td>\s*<td>/uL</td>", page)
    assert "171,774" in page and "90,000 – 250,000" in page  # AUC0-28, grouped
    assert "2 below the limit" in page


def test_scores_table_lists_inputs_window_and_missing_inputs(page):
    assert "CAR-HEMATOTOX" in page and "days -12 to -5" in page
    assert "Observation/ferritin-pre" in page
    assert "<strong>Missing:</strong> creatinine" in page
    assert "2024-01-09 05:42" in page  # 04:42 UTC in site time (UTC+01:00)


def test_grade_sections_show_runs_maximum_and_treatments(page):
    crs = page[page.index('id="crs"'):page.index('id="icans"')]
    assert "Maximum grade: <strong>2</strong>" in crs
    assert re.search(r"<td class=\"num\">3 to 5</td>", crs)
    assert "tocilizumab" in crs and "624 mg" in crs and "oxygen (low_flow)" in crs
    icans = page[page.index('id="icans"'):page.index('id="provenance"')]
    assert "Maximum grade: <strong>1</strong>" in icans and "dexamethasone" in icans


def test_provenance_table_names_version_model_and_settings(page):
    version = make_version()
    for text in (version.version_id, "ab" * 32, "multiphasic-kinetics 1",
                 "0123456789abcdef", "laplace", "&#34;seed&#34;: 7"):
        assert text in page


@pytest.mark.parametrize("missing", sorted(OUTPUT_KEYS))
def test_report_renders_when_an_output_is_missing(missing):
    outputs = make_outputs()
    del outputs[missing]
    page = render_report(make_record(), make_version(outputs))
    structure = parse(page)
    assert structure.errors == [] and structure.h2 == HEADINGS
    assert f"Not available: the twin version has no &#39;{missing}&#39; output" in page
    assert page.count("Not available") == 1


def test_report_without_infusion_or_outputs_plots_against_dates():
    page = render_report(make_record(infusion=False), make_version({}))
    assert parse(page).errors == []
    assert page.count("Not available") == 5  # journey, kinetics, scores, crs, icans
    assert "date (site time, UTC+01:00)" in page  # lab plot x axis
    assert "no infusion recorded" in page


def test_unavailable_kinetics_shows_the_producers_reason():
    reason = "no CAR T infusion in the record, so there is no day 0 to model from"
    outputs = {"kinetics": {"status": "unavailable", "reason": reason}}
    page = render_report(make_record(infusion=False), make_version(outputs))
    kinetics = page[page.index('id="kinetics"'):page.index('id="scores"')]
    assert "unavailable" in kinetics and reason in kinetics
    assert "no plot: the record has no infusion" in kinetics


def test_malformed_outputs_leave_the_rest_of_the_report(caplog):
    outputs = {"kinetics": {"t_days": [0, 1], "median": [1.0]},
               "scores": [{"value": 3}], "crs": {"timeline": [{"time": "not a date",
                                                             "grade": 1}]},
               "icans": "garbage", "journey": [{"start": iso(0)}]}
    with caplog.at_level(logging.WARNING, logger="cartwin.report.html"):
        page = render_report(make_record(), make_version(outputs))
    assert parse(page).h2 == HEADINGS
    assert page.count("could not be shown") == 5
    assert len(caplog.records) == 5
    assert "Laboratory trajectories" in page and page.count("<svg") == 1


def test_text_is_escaped_everywhere():
    outputs = make_outputs()
    outputs["scores"][0]["name"] = "<b>HT</b>"
    page = render_report(make_record(diagnosis="<script>x()</script>"),
                         make_version(outputs))
    assert "<script>" not in page and "<b>HT</b>" not in page
    assert "&lt;script&gt;x()&lt;/script&gt;" in page
    assert "&lt;b&gt;HT&lt;/b&gt;" in page  # in the table and in the SVG label


def test_report_warns_when_version_belongs_to_another_patient():
    page = render_report(make_record(), make_version(pseudonym="ffffffffffffffff"))
    assert "belongs to pseudonym ffffffffffffffff" in page


def test_same_inputs_give_the_same_bytes(page, tmp_path):
    path = write_report(make_record(), make_version(), tmp_path / "report.html")
    assert path.read_text(encoding="utf-8") == page


def test_kinetics_plot_draws_each_layer():
    data = plots.KineticsPlot(
        unit="/uL", t_obs=[-0.05, 7.0, 60.0], y_obs=[1.0, 25.0, 1.0],
        censored=[True, False, True], t_grid=[0.0, 7.0, 60.0],
        median=[1.0, 30.0, 0.5], lower=[0.0, 15.0, 0.2], upper=[2.0, 60.0, 1.0],
        interval=0.9, cmax=(9.0, 45.3))
    svg = plots.plot_kinetics(data, "days since CAR T infusion")
    for label in ("observed", "below LLOQ (at LLOQ)", "forecast median",
                  "forecast 90 % interval", "Cmax, Tmax (median)"):
        assert f">{label}<" in svg
    assert plots.plot_kinetics(plots.KineticsPlot(unit="/uL"), "x") is None


def test_study_day_midnight_on_the_infusion_axis():
    axis = plots.TimeAxis(INFUSION, dt.timedelta(hours=1))
    # Infusion at 10:30 site time: day 0 began 10.5 h before it.
    assert axis.day_start(0) == pytest.approx(-10.5 / 24)
    assert axis.day_start(3) == pytest.approx(3 - 10.5 / 24)
    assert axis.x(at(2.25)) == pytest.approx(2.25)


@pytest.mark.parametrize("value, text", [
    (45.3, "45.3"), (171774.2, "171,774"), (0.0123, "0.0123"), (2, "2"),
    (None, "–"), (float("nan"), "–")])
def test_numbers_read_as_a_clinician_expects(value, text):
    assert report_html.fmt_number(value) == text


def test_dose_time_and_code_formatting():
    assert report_html.fmt_scientific(1.56e8) == "1.56 × 10⁸"
    assert report_html.fmt_time(iso(0), dt.timedelta(hours=1)) == "2024-01-15 10:30"
    assert report_html.fmt_code("http://hl7.org/fhir/sid/icd-10-cm|C83.30") == (
        "ICD-10-CM C83.30")
    assert report_html.fmt_unit("{cells}") == "cells"
