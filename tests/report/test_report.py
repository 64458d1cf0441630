"""Tests of the standalone HTML report (cartwin.report)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import html
import logging
import re
from html.parser import HTMLParser

import pytest
from matplotlib.figure import Figure

from cartwin.record.model import Event, Observation, PatientFacts, PatientRecord
from cartwin.report import html as report_html
from cartwin.report import plots, render_report, write_report
from cartwin.twin.version import OUTPUT_KEYS, TwinVersion

UTC = dt.UTC
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
DIAGNOSTICS = ("gradient norm 7.8e-07 < 1e-06 after 11 iterations; Hessian positive "
               "definite (condition 94.6); 1 observation(s) before infusion ignored")
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
    obs += [Observation("cart_qpcr", at(d), v, "{copies}/ug")
            for d, v in ((7, 12000.0), (14, 20000.0), (28, 3000.0))]
    labs = {"crp": (12, 15, 150, 20, 5), "ferritin": (950, 1000, 3000, 2000, 1100),
            "ldh": (310, 280, 400, 330, 260), "platelets": (140, 100, 80, 50, 40),
            "anc": (1.9, 0.3, 0.03, 0.05, 1.1), "hemoglobin": (10.8, 10, 9.5, 8.6, 8.8),
            "creatinine": (0.88, 0.86, 1.2, 0.92, 0.88),
            "il6": (4.5, 10.9, 850.0, 60.0, 9.0)}
    units = {"crp": "mg/L", "ferritin": "ng/mL", "ldh": "U/L", "platelets": "10*9/L",
             "anc": "10*9/L", "hemoglobin": "g/dL", "creatinine": "mg/dL",
             "il6": "pg/mL"}
    for quantity, values in labs.items():
        for day, value in zip((-6, 0, 3, 7, 14), values):
            obs.append(Observation(quantity, at(day - 0.2), value, units[quantity]))
    for half_days in range(16):
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
    t_days = [0.0, 3.0, 7.0, 10.0, 14.0, 28.0, 60.0, 90.0, 180.0, 365.0]
    median = [1.5, 8.0, 30.0, 44.0, 38.0, 5.0, 0.8, 0.3, 0.2, 0.1]
    hematotox_inputs = [
        {"name": q, "value": v, "unit": u, "time": iso(-6.2), "study_day": -6,
         "source_id": f"Observation/{q}-pre", "censored": None}
        for q, v, u in (("platelets", 140.0, "10*9/L"), ("anc", 1.9, "10*9/L"),
                        ("hemoglobin", 10.8, "g/dL"), ("crp", 12.0, "mg/L"),
                        ("ferritin", 950.0, "ng/mL"))]
    return {
        "kinetics": {
            "quantity": "cart_flow", "unit": "/uL", "status": "converged",
            "reason": DIAGNOSTICS,
            "n_obs": 4, "n_censored": 1, "t_days": t_days, "median": median,
            "lower": [m / 2 for m in median], "upper": [m * 2 for m in median],
            "interval": 0.9,
            "derived": {
                "cmax": {"median": 45.3, "lower": 30.1, "upper": 70.2, "unit": "/uL"},
                "tmax": {"median": 10.2, "lower": 8.0, "upper": 13.5, "unit": "d"},
                "auc0_28": {"median": 171774.2, "lower": 90000.0, "upper": 250000.0,
                            "unit": "d./uL"}},
            "parameters": {"alpha": {"map": 0.16, "median": 0.17, "lower": 0.1,
                                     "upper": 0.3, "unit": "/d"},
                           "fb": {"map": 0.0079, "median": 0.0079, "lower": 0.002,
                                  "upper": 0.03, "unit": "1"}}},
        "scores": [
            {"name": "CAR-HEMATOTOX", "value": 2, "category": "high",
             "inputs": hematotox_inputs, "missing": [], "window": [-12, -5],
             "reference": "Rejeski 2021 doi:10.1182/blood.2020010543", "message": ""},
            {"name": "EASIX", "value": None, "category": None, "inputs": [],
             "missing": ["creatinine"], "window": [-12, -5],
             "reference": "Pennisi 2021",
             "message": "no creatinine in days -12 to -5"},
            {"name": "m-EASIX", "value": 4.79, "category": None,
             "inputs": [{"name": "crp", "value": 15.0, "unit": "mg/L",
                         "time": iso(-0.2), "study_day": 0,
                         "source_id": "Observation/crp-d0", "censored": None}],
             "missing": [], "window": [0, 0], "reference": "Pennisi 2021",
             "message": "", "timepoint": "day 0"}],
        "crs": {
            "timeline": [
                {"time": iso(0.5), "study_day": 0, "grade": 0, "reasons": []},
                {"time": iso(2.0), "study_day": 2, "grade": 1,
                 "reasons": [f"fever 38.9 Cel at {iso(2.0)}"]},
                {"time": iso(3.1), "study_day": 3, "grade": 2,
                 "reasons": ["low-flow oxygen", "systolic BP 81 mm[Hg] < 90"]},
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
    outputs: dict | None = None, pseudonym: str = PSEUDONYM,
    created_at: dt.datetime = dt.datetime(2024, 3, 1, 12, tzinfo=UTC),
) -> TwinVersion:
    return TwinVersion(
        pseudonym=pseudonym, created_at=created_at,
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


@pytest.fixture
def no_plots(monkeypatch):
    """Skip the (slow) drawing where a test reads only tables and texts."""
    for name in ("plot_journey", "plot_kinetics", "plot_panels", "plot_grade"):
        monkeypatch.setattr(plots, name, lambda *args, **kwargs: "<svg></svg>")


def section(page: str, key: str, next_key: str) -> str:
    return page[page.index(f'id="{key}"'):page.index(f'id="{next_key}"')]


def visible_text(html: str) -> str:
    """Text between tags, whitespace collapsed (attributes are dropped)."""
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


# -- the page as a whole -----------------------------------------------------------
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


def test_navigation_links_every_section_spaced_by_css(page):
    nav = page[page.index("<nav>"):page.index("</nav>")]
    assert re.findall(r'href="#(\w+)"', nav) == [
        "patient", "journey", "kinetics", "scores", "labs", "crs", "icans",
        "provenance"]
    assert re.search(r"nav \{[^}]*display: flex;[^}]*gap:", page)


def test_plots_are_inline_svg_with_unique_ids(page):
    structure = parse(page)
    assert structure.tags.count("svg") == 5  # journey, kinetics, labs, CRS, ICANS
    ids = [v for _, k, v in structure.attrs if k == "id"]
    assert len(ids) == len(set(ids))
    assert "days since CAR T infusion" in page  # x axis of every time plot


def test_every_plot_has_a_text_alternative(page):
    structure = parse(page)
    svg = [(k, v) for tag, k, v in structure.attrs if tag == "svg"]
    labels = [v for k, v in svg if k == "aria-label"]
    assert ("role", "img") in svg and len(labels) == 5 and all(labels)
    assert page.count("<title>") == 1 + 5  # the page's own and one per plot
    kinetics = ("CAR T kinetics; 4 measurements of CAR T cells (cells/µL) after "
                "the infusion, up to day 60; forecast median and interval to day "
                "365; 3 measurements of CAR transgene (copies/µg DNA), not fitted.")
    assert ("aria-label", kinetics) in svg


def test_svg_text_alternative_is_escaped():
    fig = Figure(figsize=(1, 1))
    fig.subplots()
    svg = plots.figure_svg(fig, "t", alt='a <b> & "c"')
    escaped = "a &lt;b&gt; &amp; &quot;c&quot;"
    assert f'aria-label="{escaped}"' in svg and f"<title>{escaped}</title>" in svg
    assert svg.startswith('<svg class="plot" role="img" ')


def test_page_shows_no_ucum_code(page):
    text = visible_text(page)
    for code in ("10*9/L", "mm[Hg]", "{copies}", "/uL", "d./uL", "10^9"):
        assert code not in text
    assert not re.search(r"\bCel\b", text)
    assert "×10⁹/L" in text and "cells/µL" in text


def test_times_are_site_local_and_the_version_time_utc(page):
    assert "made 2024-03-01 12:00 UTC" in page
    assert "all other times are site time (UTC+01:00)" in page
    assert "+00:00" not in page and "T09:30" not in page  # no raw ISO instant


# -- kinetics ----------------------------------------------------------------------
def test_kinetics_summary_is_plain_and_diagnostics_are_collapsed(page):
    kinetics = section(page, "kinetics", "scores")
    summary = re.search(r'<p class="summary">(.*?)</p>', kinetics, re.DOTALL).group(1)
    assert " ".join(summary.split()) == (
        "Fit to 4 flow-cytometry measurements (1 below the limit of "
        "quantification): converged. 1 sample taken before the infusion was not "
        "used. 3 qPCR measurements shown for comparison; not used by the fit.")
    details = kinetics[kinetics.index("<details>"):kinetics.index("</details>")]
    assert "<summary>Fit diagnostics</summary>" in details
    assert html.escape(DIAGNOSTICS) in details and "cart_flow (cells/µL)" in details
    assert kinetics.count("gradient norm") == 1 and kinetics.count("cart_flow") == 1


def test_kinetics_table_shows_derived_values_with_intervals_and_units(page):
    assert re.search(r"<td>Peak level \(Cmax\)</td>\s*<td class=\"num\">45.3</td>\s*"
                     r"<td class=\"num\">30.1 – 70.2</td>\s*"
                     r"<td class=\"unit\">cells/µL</td>", page)
    assert "171,774" in page and "90,000 – 250,000" in page  # AUC0-28, grouped
    assert '<td class="unit">cells/µL·day</td>' in page


def test_parameters_have_plain_names_meanings_and_half_lives(page):
    kinetics = section(page, "kinetics", "scores")
    # alpha 0.17 /d: half-life ln 2 / 0.17 = 4.077 days, shown to 3 digits.
    assert re.search(r'<td>Early decline rate<br><code class="meta">alpha</code></td>'
                     r"\s*<td>[^<]*after the peak[^<]*; half-life 4.08 days</td>",
                     kinetics)
    assert re.search(r'<td>Fraction to the slow phase<br><code class="meta">fb</code>'
                     r"</td>\s*<td>[^<]*slow \(memory-like\) phase</td>", kinetics)
    assert '<td class="unit">per day</td>' in kinetics


@pytest.mark.parametrize("t_days, window", [
    ([-0.05, 7.0, 14.0, 28.0, 60.0], (-1.0, 90.0)),  # last + 30
    ([3.0, 7.0], (-1.0, 42.0)),  # at least day 42
    ([], (-1.0, 42.0)),
    ([-3.0, 10.0], (-3.5, 42.0)),  # an earlier pre-infusion sample
    ([-30.0, 10.0], (-7.0, 42.0)),  # ... but not before day -7
])
def test_kinetics_window_covers_the_clinically_relevant_days(t_days, window):
    assert plots.kinetics_window(t_days) == window


def kinetics_data(**changes) -> plots.KineticsPlot:
    data = plots.KineticsPlot(
        observed=plots.AssaySeries(
            "CAR T cells (cells/µL)", t=[-0.05, 7.0, 60.0], y=[1.0, 25.0, 1.0],
            censored=[True, False, True], legend="flow-cytometry (fitted)"),
        t_grid=[0.0, 7.0, 60.0, 365.0], median=[1.0, 30.0, 0.5, 0.1],
        lower=[0.0, 15.0, 0.2, 0.01], upper=[2.0, 60.0, 1.0, 0.5], interval=0.9,
        cmax=(9.0, 45.3),
        other=plots.AssaySeries(
            "CAR transgene (copies/µg DNA)", t=[7.0, 14.0], y=[1e4, 2e4],
            title="CAR transgene by qPCR: not used by the fit",
            legend="qPCR (not fitted)"))
    return dataclasses.replace(data, **changes)


def test_kinetics_plot_draws_each_layer():
    svg = plots.plot_kinetics(kinetics_data(), alt="CAR T kinetics")
    for label in ("flow-cytometry (fitted)", "below LLOQ (drawn at the limit)",
                  "before infusion (not used by the fit)", "forecast median",
                  "forecast 90 % interval", "Cmax, Tmax (median)",
                  "CAR T infusion (day 0)",
                  "last observation (day 60); forecast only after",
                  "qPCR (not fitted)", "CAR transgene by qPCR: not used by the fit",
                  "CAR T cells (cells/µL)", "Whole forecast horizon, to day 365",
                  "days shown in the upper panel"):
        assert f">{label}<" in svg
    assert plots.plot_kinetics(plots.KineticsPlot(plots.AssaySeries("x"))) is None


#: A forecast that ends at day 90, inside the main panel.
SHORT_FORECAST = {"t_grid": [0.0, 7.0, 60.0, 90.0], "median": [1.0, 30.0, 0.5, 0.3],
                  "lower": [0.5, 15.0, 0.2, 0.1], "upper": [2.0, 60.0, 1.0, 0.6]}


def test_kinetics_plot_ticks_fortnightly_to_the_window_end():
    # Last observation day 60: window -1 to 90, ticks every 14 days (span > 70).
    svg = plots.plot_kinetics(kinetics_data(**SHORT_FORECAST))
    assert ">84<" in svg and ">98<" not in svg and ">70<" in svg
    assert "Whole forecast horizon" not in svg  # the forecast ends inside the window
    early = dataclasses.replace(kinetics_data().observed, t=[-20.0, 7.0, 60.0])
    svg = plots.plot_kinetics(kinetics_data(observed=early, **SHORT_FORECAST))
    assert "Whole forecast horizon" in svg  # day -20 lies left of the day -7 limit


# -- scores ------------------------------------------------------------------------
def test_scores_table_lists_inputs_window_and_missing_inputs(page):
    scores = section(page, "scores", "labs")
    assert "CAR-HEMATOTOX" in scores and "days -12 to -5" in scores
    assert "<strong>Missing:</strong> Creatinine" in scores
    # 04:42 UTC in site time (UTC+01:00); the source id only in the tooltip/details
    title = "measured 2024-01-09 05:42 (UTC+01:00); source Observation/ferritin-pre"
    assert re.search(rf'<li title="{re.escape(title)}">Ferritin 950 ng/mL\s*'
                     r'<span class="meta">\(day -6\)</span></li>', scores)
    details = re.findall(r"<details>.*?</details>", scores, re.DOTALL)
    assert "Observation/ferritin-pre" in details[0]
    assert "Observation/" not in visible_text(re.sub(r"<details>.*?</details>", "",
                                                     scores, flags=re.DOTALL))


def test_single_day_window_and_missing_cut_off_read_plainly(page):
    scores = section(page, "scores", "labs")
    m_easix = scores[scores.index(">m-EASIX"):]
    assert re.search(r'<td class="num">4.79</td><td>no published cut-off</td>\s*'
                     r"<td>day 0</td>", m_easix)
    easix = scores[scores.index(">EASIX"):scores.index(">m-EASIX")]
    assert re.search(r'<td class="num">–</td><td>–</td>', easix)  # not computed


# -- labs --------------------------------------------------------------------------
def test_lab_panels_mark_treatments_thresholds_and_keep_labels_outside(page):
    labs = section(page, "labs", "crs")
    svg = labs[labs.index("<svg"):labs.index("</svg>")]
    for label in ("IL-6", "CAR T infusion (day 0)", "lymphodepletion",
                  "ANC 0.5 ×10⁹/L: severe neutropenia",
                  "ANC 1.0 ×10⁹/L: recovery threshold",
                  "platelets 50 ×10⁹/L: severe thrombocytopenia",
                  "value used by a score (listed below)", "×10⁹/L", "pg/mL"):
        assert f">{label}<" in svg
    assert "CAR-HEMATOTOX" not in svg  # score labels are in the caption
    assert "<li>Ferritin 950 ng/mL (day -6): used by CAR-HEMATOTOX = 2</li>" in labs


def test_panels_share_one_date_range():
    day = dt.datetime(2024, 1, 1)
    panels = [plots.Panel("a", "", x=[day, day + dt.timedelta(days=10)], y=[1, 2]),
              plots.Panel("b", "", x=[day + dt.timedelta(days=40)], y=[3]),
              plots.Panel("c", "")]
    # 3 % of the 40-day span on each side.
    assert plots.shared_xlim(panels) == (day - dt.timedelta(days=1.2),
                                         day + dt.timedelta(days=41.2))
    assert plots.shared_xlim([plots.Panel("c", "")]) is None


# -- CRS and ICANS -----------------------------------------------------------------
def test_grade_sections_show_runs_maximum_and_treatments(page):
    crs = section(page, "crs", "icans")
    assert "Maximum grade: <strong>2</strong>" in crs
    assert re.search(r"<td class=\"num\">3 to 5</td>", crs)
    assert "tocilizumab" in crs and "624 mg" in crs and "oxygen (low_flow)" in crs
    icans = section(page, "icans", "provenance")
    assert "Maximum grade: <strong>1</strong>" in icans and "dexamethasone" in icans


def test_grade_reasons_use_site_time_and_readable_units(page):
    crs = section(page, "crs", "icans")
    assert "<th>Time (UTC+01:00)</th>" in crs
    # iso(2.0) is 2024-01-17 09:30 UTC, 10:30 at the site.
    assert "<td>fever 38.9 °C at 2024-01-17 10:30</td>" in crs
    assert "systolic BP 81 mmHg &lt; 90" in crs


def test_grading_without_infusion_is_not_applicable(no_plots):
    message = "patient has no infusion event, so CRS is not graded"
    outputs = {"crs": {"points": [], "daily_max": [], "max_grade": None,
                       "message": message, "notes": ["fever: T >= 38.0 Cel"]}}
    page = render_report(make_record(infusion=False), make_version(outputs))
    crs = section(page, "crs", "icans")
    assert "Maximum grade: <strong>not applicable (no infusion)</strong>" in crs
    assert message in crs and "fever: T &gt;= 38.0 °C" in crs
    assert "None" not in crs and "Not available" not in crs


# -- provenance and robustness -------------------------------------------------------
def test_provenance_table_names_version_model_and_settings(page):
    version = make_version()
    for text in (version.version_id, "ab" * 32, "multiphasic-kinetics 1",
                 "0123456789abcdef", "laplace", "&#34;seed&#34;: 7",
                 "2024-03-01 12:00 UTC"):
        assert text in page


def test_made_time_drops_seconds_and_microseconds(no_plots):
    made = dt.datetime(2024, 3, 1, 12, 0, 5, 123456, tzinfo=UTC)
    page = render_report(make_record(), make_version(created_at=made))
    assert "made 2024-03-01 12:00 UTC" in page
    assert ".123456" not in page and "12:00:05" not in page


def test_site_offset_falls_back_to_the_sources_without_infusion():
    facts = PatientFacts(pseudonym=PSEUDONYM)
    obs = [Observation("crp", at(d), 5.0, "mg/L", source_utc_offset_min=m)
           for d, m in ((1, 120), (2, 120), (3, 0))]
    record = PatientRecord(facts=facts, observations=tuple(obs))
    assert plots.site_offset(record) == dt.timedelta(hours=2)
    infused = record.with_data(events=[Event("infusion", INFUSION,
                                             source_utc_offset_min=60)])
    assert plots.site_offset(infused) == dt.timedelta(hours=1)
    assert plots.site_offset(PatientRecord(facts=facts)) == dt.timedelta(0)


# "graph" is optional (TwinSettings(graph=True)); its absence is no gap.
@pytest.mark.parametrize("missing", sorted(set(OUTPUT_KEYS) - {"graph"}))
def test_report_renders_when_an_output_is_missing(missing, no_plots):
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
    labs = section(page, "labs", "crs")
    assert ">lymphodepletion<" in labs and "CAR T infusion" not in labs


def test_unavailable_kinetics_shows_the_producers_reason():
    reason = "no CAR T infusion in the record, so there is no day 0 to model from"
    outputs = {"kinetics": {"status": "unavailable", "reason": reason}}
    page = render_report(make_record(infusion=False), make_version(outputs))
    kinetics = section(page, "kinetics", "scores")
    assert f'<p class="summary">No fit: {reason}</p>' in kinetics
    assert "<td>unavailable</td>" in kinetics  # the status code, in the details
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


def test_text_is_escaped_everywhere(no_plots):
    outputs = make_outputs()
    outputs["scores"][0]["name"] = "<b>HT</b>"
    page = render_report(make_record(diagnosis="<script>x()</script>"),
                         make_version(outputs))
    assert "<script>" not in page and "<b>HT</b>" not in page
    assert "&lt;script&gt;x()&lt;/script&gt;" in page
    assert "&lt;b&gt;HT&lt;/b&gt;" in page  # in the table and the lab caption


def test_report_warns_when_version_belongs_to_another_patient(no_plots):
    page = render_report(make_record(), make_version(pseudonym="ffffffffffffffff"))
    assert "belongs to pseudonym ffffffffffffffff" in page


def test_same_inputs_give_the_same_bytes(page, tmp_path):
    path = write_report(make_record(), make_version(), tmp_path / "report.html")
    assert path.read_text(encoding="utf-8") == page


# -- formatting --------------------------------------------------------------------
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


@pytest.mark.parametrize("code, text", [
    ("/uL", "cells/µL"), ("{copies}/ug", "copies/µg DNA"), ("10*9/L", "×10⁹/L"),
    ("Cel", "°C"), ("mm[Hg]", "mmHg"), ("d./uL", "cells/µL·day"),
    ("d.{copies}/ug", "copies/µg·day"), ("{cells}", "cells"), ("mg/L", "mg/L"),
    ("{beats}/min", "beats/min")])
def test_units_are_shown_as_clinicians_write_them(code, text):
    assert report_html.fmt_unit(code) == text


def test_free_text_gets_site_time_and_readable_units():
    hour = dt.timedelta(hours=1)
    fmt = report_html.fmt_text
    assert fmt("fever 38.9 Cel at 2024-01-17T09:30:00+00:00", hour) == (
        "fever 38.9 °C at 2024-01-17 10:30")
    assert fmt("systolic BP 81 mm[Hg] < 90", hour) == "systolic BP 81 mmHg < 90"
    assert fmt("at 2024-01-17T09:30:59.123456Z.", hour) == "at 2024-01-17 10:30."
    assert fmt("Cells of 2 10*9/L; {copies}/ug", hour) == (
        "Cells of 2 ×10⁹/L; copies/µg DNA")
    assert fmt("1 d at /d", hour) == "1 d at /d"  # too short to replace in prose


def test_dose_time_and_code_formatting():
    assert report_html.fmt_scientific(1.56e8) == "1.56 × 10⁸"
    assert report_html.fmt_time(iso(0), dt.timedelta(hours=1)) == "2024-01-15 10:30"
    assert report_html.fmt_utc(dt.datetime(2024, 3, 1, 12, 0, 59, 999999,
                                           tzinfo=UTC)) == "2024-03-01 12:00 UTC"
    assert report_html.fmt_code("http://hl7.org/fhir/sid/icd-10-cm|C83.30") == (
        "ICD-10-CM C83.30")
    assert report_html.fmt_day_span(0, 0) == "day 0"
    assert report_html.fmt_day_span(-12, -5) == "days -12 to -5"
