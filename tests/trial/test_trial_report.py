"""Tests of the standalone HTML trial report (cartwin.trial.report).

The result is synthetic: two simulated arms (one with a hostile name), one
observed arm with the ZUMA-1 rates of clinical-facts.md §8 (Locke 2018 via
Ther Adv Hematol 2019, doi:10.1177/2040620719841581, Table 4: n = 101,
ORR 82%, CR 58%, CRS ≥3 13%, neurotoxicity ≥3 31%), and a third simulated arm
whose every simulation failed.
"""

from __future__ import annotations

import html
import re
import types
from dataclasses import dataclass, field
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest

from cartwin.trial import report

HOSTILE = "<script>alert(1)</script>"
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"
N_SIM = 100


@dataclass(frozen=True)
class Policy:
    at_crs_grade: int | None
    doses: float = 1.0


@dataclass(frozen=True)
class Rules:
    max_hematotox: int | None = None
    min_age: float | None = None
    max_age: float | None = None
    max_prior_lines: int | None = None


@dataclass(frozen=True)
class Arm:
    name: str
    product: str | None = "axi-cel"
    dose_cells_per_kg: float | None = 2.0e6
    dose_cells: float | None = None
    memory_fraction: float = 0.3
    lymphodepletion: object = field(default_factory=lambda: types.SimpleNamespace(
        regimen="flu/cy", days=(-5, -4, -3), units_per_day=1.0))
    bridging: object = None
    eligibility: Rules = field(default_factory=Rules)
    tocilizumab: Policy = field(default_factory=lambda: Policy(2))
    steroids: Policy = field(default_factory=lambda: Policy(3))
    observed: dict | None = None

    @property
    def simulated(self) -> bool:
        return self.observed is None


@dataclass(frozen=True)
class Trial:
    arms: tuple
    name: str = "ZUMA-1-like axi-cel vs lower dose"
    disease: str = "LBCL"
    reference_arm: str = "axi-cel"
    alpha: float = 0.05
    power: float = 0.8
    seed: int = 20260101
    horizon_days: float = 365.0
    validate_against: str | None = "ZUMA-1"

    def to_dict(self) -> dict:
        return {"name": self.name, "arms": [a.name for a in self.arms]}


ZUMA1 = {"n": 101, "orr": 0.82, "cr": 0.58, "crs_ge3": 0.13, "icans_ge3": 0.31}
ARMS = (
    Arm("axi-cel", eligibility=Rules(max_hematotox=7, min_age=18)),
    Arm(HOSTILE, dose_cells_per_kg=None, dose_cells=1.0e8, tocilizumab=Policy(0),
        bridging=types.SimpleNamespace(days=(-14, -10), units_per_day=0.5)),
    Arm("all-failed"),
    Arm("ZUMA-1 (published)", product=None, observed=ZUMA1),
)


def outcomes() -> pd.DataFrame:
    """Per-patient table of the contract for the three simulated arms."""
    rng = np.random.default_rng(7)
    frames = []
    for arm in ("axi-cel", HOSTILE, "all-failed"):
        n = N_SIM
        frames.append(pd.DataFrame({
            "arm": arm, "patient": np.arange(n), "chunk": 0, "weight": 1.0,
            "eligible": np.arange(n) % 10 != 0, "solve_ok": arm != "all-failed",
            "cmax_per_ul": rng.lognormal(3.0, 1.0, n),
            "tmax_day": rng.uniform(7, 14, n),
            "auc0_28": rng.lognormal(6.0, 1.0, n),
            "crs_grade": np.arange(n) % 5, "icans_grade": np.arange(n) % 3,
            # Progression on day 1..100 for patient 0..99, censored at 365 when odd.
            "pfs_days": np.where(np.arange(n) % 2 == 0, np.arange(n) + 1.0, 365.0),
            "pfs_event": np.arange(n) % 2 == 0,
        }))
    return pd.concat(frames, ignore_index=True)


def proportion(estimate, low, high, events, n):
    return {"kind": "proportion", "estimate": estimate, "low": low, "high": high,
            "events": events, "n": n}


NO_NEUTROPHILS = {"kind": "proportion", "estimate": None, "low": None, "high": None,
                  "events": None, "n": 90,
                  "reason": "the model graph has no neutrophil model"}


def endpoints() -> dict:
    pfs = {"kind": "survival", "median_days": 180.0, "low": 150.0, "high": 220.0,
           "at_6_months": 0.52, "at_12_months": 0.41, "events": 45, "n": 90}
    km = {"t_days": [0.0, 30.0, 90.0, 180.0, 365.0],
          "survival": [1.0, 0.9, 0.7, 0.5, 0.4], "low": [1.0, 0.83, 0.6, 0.4, 0.3],
          "high": [1.0, 0.95, 0.8, 0.6, 0.5]}
    return {
        "arms": {
            "axi-cel": {"n": 100, "n_eligible": 90, "observed": False,
                        "orr": proportion(0.8, 0.71, 0.87, 72, 90),
                        "cr": {**proportion(0.58, 0.482, 0.673, 52, 90),
                               "note": "weighted estimate"},
                        "crs_ge3": proportion(0.4, 0.3, 0.5, 36, 90),
                        "severe_neutropenia_gt14d": NO_NEUTROPHILS, "pfs": pfs},
            HOSTILE: {"n": 100, "n_eligible": 90, "observed": False,
                      "orr": proportion(0.6, 0.5, 0.7, 54, 90),
                      "cr": proportion(0.4, 0.3, 0.5, 36, 90),
                      "crs_ge3": proportion(0.4, 0.3, 0.5, 36, 90),
                      "severe_neutropenia_gt14d": NO_NEUTROPHILS,
                      # No event at all: survival stays 1, median not reached.
                      "pfs": {**pfs, "median_days": None, "low": None, "high": None,
                              "events": 0}},
            "all-failed": {"n": 100, "n_eligible": 90, "observed": False,
                           "orr": {**NO_NEUTROPHILS, "reason": "no analysed patient"}},
            "ZUMA-1 (published)": {
                "n": 101, "n_eligible": 101, "observed": True,
                "pfs": {"kind": "survival", "available": False,
                        "reason": "an observed arm gives no PFS data"},
                "orr": proportion(0.82, 0.733, 0.884, 83, 101),
                "cr": proportion(0.58, 0.483, 0.671, 59, 101),
                "crs_ge3": proportion(0.13, 0.077, 0.21, 13, 101)}},
        "comparisons": [
            {"endpoint": "orr", "arm": HOSTILE, "reference": "axi-cel",
             "measure": "risk difference", "estimate": -0.2, "low": -0.33,
             "high": -0.07, "p_value": 0.0031},
            {"endpoint": "pfs", "arm": HOSTILE, "reference": "axi-cel",
             "measure": "hazard ratio", "estimate": 0.62, "low": 0.41, "high": 0.93,
             "p_value": 0.00002},
            {"endpoint": "pfs", "arm": "all-failed", "reference": "axi-cel",
             "measure": "hazard ratio", "estimate": None, "low": None, "high": None,
             "p_value": None, "reason": "no analysed patient"}],
        "km": {"axi-cel": km,
               HOSTILE: {"t_days": [0.0, 365.0], "survival": [1.0, 1.0],
                         "low": [1.0, 1.0], "high": [1.0, 1.0]},
               "all-failed": {"t_days": [], "survival": [], "low": [], "high": []}},
        "sample_size": [
            {"endpoint": "orr", "arm": HOSTILE, "reference": "axi-cel",
             "effect": -0.2, "per_arm": 81.3, "events": None, "method": "Fleiss"},
            {"endpoint": "pfs", "arm": HOSTILE, "reference": "axi-cel",
             "effect": 0.62, "per_arm": 140.2, "events": 120.5,
             "method": "Schoenfeld"},
            {"endpoint": "crs_ge3", "arm": HOSTILE, "reference": "axi-cel",
             "effect": 0.0, "per_arm": None, "events": None, "method": "Fleiss",
             "note": "no difference to detect"}],
    }


# Rows as cartwin.trial.validation writes them (notes say how a row was used).
SOURCE = "Ther Adv Hematol 2019, doi:10.1177/2040620719841581, Table 4"
VALIDATION = [
    {"cohort": "ZUMA-1", "endpoint": "orr", "published": 0.82, "published_low": 0.733,
     "published_high": 0.884, "simulated": 0.8, "simulated_low": 0.71,
     "simulated_high": 0.87, "within": True, "source": SOURCE,
     "note": "population calibrated to axi-cel real world's rate, not this cohort's"},
    {"cohort": "ZUMA-1", "endpoint": "crs_ge3", "published": 0.13,
     "published_low": 0.077, "published_high": 0.21, "simulated": 0.14,
     "simulated_low": 0.08, "simulated_high": 0.22, "within": True, "source": SOURCE,
     "note": "CRS link fitted to ZUMA-1: agreement is by construction"},
    {"cohort": "ZUMA-1", "endpoint": "pfs_median_days", "published": 179.6,
     "published_low": None, "published_high": None, "simulated": 180.0,
     "simulated_low": 150.0, "simulated_high": 220.0, "within": True,
     "source": SOURCE, "note": "deaths without progression not modelled"},
]
# As cartwin.trial.population writes it, plus the report's "assumptions".
POPULATION = {
    "parameters": ["log_kexp", "log_tumour0"], "shift": {"log_kexp": 0.21},
    "targets": {"crs_ge3": 0.13, "cr": 0.58}, "raw": {"crs_ge3": 0.2, "cr": 0.5},
    "achieved": {"crs_ge3": 0.128, "cr": 0.571}, "ess": 812.4, "pilot": 2000,
    "acceptance_rate": 0.412,
    "assumptions": ["Bridging therapy given to no virtual patient."],
}
# As cartwin.trial.runner writes it.
PROVENANCE = {"cartwin_version": "0.6.0", "trial_name": "x", "seed": 20260101,
              "trial_digest": "ab" * 32, "trial_source": "trial.toml",
              "patients_per_arm": 100, "chunk_size": 50, "backend": "local",
              "workers": 1, "chunks_total": 6, "chunks_run": 4,
              "chunks_done_before": 2, "elapsed_s": 12.34,
              "notes": ["population_summary skipped", "second note"]}


def make_result(**changes):
    fields = {"trial": Trial(ARMS), "outcomes": outcomes(), "endpoints": endpoints(),
              "validation": VALIDATION, "population": POPULATION,
              "provenance": PROVENANCE, "outdir": None}
    return types.SimpleNamespace(**{**fields, **changes})


VOID = {"br", "hr", "img", "input", "link", "meta", "source", "wbr"}


class Links(HTMLParser):
    """Tags, link-like attributes and unclosed or mismatched tags of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.links: list[str] = []
        self.stack: list[str] = []
        self.errors: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.links += [v or "" for k, v in attrs
                       if k in ("src", "href", "xlink:href", "action", "srcset")]
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.tags.append(tag)
        self.links += [v or "" for k, v in attrs if k in ("href", "xlink:href")]

    def handle_endtag(self, tag):
        if not self.stack or self.stack.pop() != tag:
            self.errors.append(tag)


def text_of(page: str) -> str:
    return html.unescape(" ".join(re.sub(r"<[^>]+>", " ", page).split()))


@pytest.fixture(scope="module")
def page() -> str:
    return report.render_trial_report(make_result())


@pytest.fixture(scope="module")
def context() -> dict:
    return report.build_trial_context(make_result())


# -- the page as a whole ------------------------------------------------------------
def test_page_is_standalone(page):
    parser = Links()
    parser.feed(page)
    assert parser.errors == [] and parser.stack == []  # well-formed
    assert parser.links and all(link.startswith("#") for link in parser.links)
    assert not {"script", "link", "img", "iframe", "object"} & set(parser.tags)
    assert not re.search(r"(src|href)\s*=\s*['\"]?\s*(https?:)?//", page)
    assert "@import" not in page and not re.search(r"url\(\s*['\"]?(https?:)?//", page)


def test_page_embeds_six_figures_each_with_a_text_alternative(page):
    # Arm bars, KM, forest, validation, kinetics, CRS/ICANS grades.
    assert page.count("<svg ") == 6
    assert page.count('role="img"') == 6 and page.count("aria-label=") == 6


def test_hostile_arm_name_is_escaped_everywhere(page):
    assert HOSTILE not in page and "<script" not in page
    assert page.count(ESCAPED) >= 10  # tables, figure texts, alternatives


def test_same_result_renders_the_same_bytes(page):
    assert report.render_trial_report(make_result()) == page


def test_report_is_written_to_the_path(tmp_path, page):
    path = report.write_trial_report(make_result(), tmp_path / "report.html")
    assert path == tmp_path / "report.html"
    assert path.read_text(encoding="utf-8") == page


# -- sections -------------------------------------------------------------------------
def test_header_shows_trial_arms_counts_and_provenance(page):
    text = text_of(page)
    assert "In silico trial: ZUMA-1-like axi-cel vs lower dose" in text
    for value in ("LBCL", "20260101", "0.6.0", "ab" * 32, "local", "12.3 s",
                  "95% CI", "2 × 10⁶ cells/kg", "1 × 10⁸ cells",
                  "CAR-HEMATOTOX ≤ 7; age ≥ 18 years", "at CRS grade ≥2 (1 dose)",
                  "dexamethasone 10 mg at CRS grade ≥3", "observed (published)",
                  "flu/cy, days -5, -4, -3 (1 unit/day)", "never",
                  "days -14, -10 (0.5 units/day), to patients with the population"):
        assert value in text, value
    # 100 simulated, 90 eligible (every 10th patient is not), 0 or 100 failures.
    assert "100 90 0 90" in text and "100 90 100 0" in text
    assert "ZUMA-1 (published) observed (published)" in text and " 101 " in text
    assert "Patients per arm 100" in text
    assert "Chunks reused from an earlier run 2" in text and "Workers 1" in text
    assert "Run notes population_summary skipped; second note" in text


def test_proportions_show_estimate_ci_and_events(page):
    text = text_of(page)
    assert "58.0% (48.2–67.3%); 52/90" in text
    assert "axi-cel, Complete response (best): weighted estimate" in text
    assert "82.0% (73.3–88.4%); 83/101" in text  # the observed ZUMA-1 ORR


def test_unavailable_endpoints_say_why(page):
    text = text_of(page)
    assert "not available: the model graph has no neutrophil model" in text
    assert "not available: no analysed patient" in text
    assert "not reported" in text  # neutropenia was not published for ZUMA-1


def test_survival_table_and_numbers_at_risk(context):
    survival = context["survival"]
    assert survival["available"]
    first = survival["rows"][0]
    assert first["median"] == "5.9 months (180 days)"  # 180 / 30.4375
    assert first["m6"] == "52.0%" and first["m12"] == "41.0%"
    assert survival["rows"][1]["median"] == "not reached"
    assert survival["rows"][-1]["median"] == (
        "not available: an observed arm gives no PFS data")
    assert survival["risk_ticks"] == ["0", "3", "6", "9", "12"]
    # Analysed: 90 patients (i % 10 != 0): 50 odd i censored at day 365 and
    # 40 even i progressing on day i + 1. At 3 months (91.3 days) the even
    # i >= 91 remain (92, 94, 96, 98): 54; later only the censored 50 (the
    # 12-month tick sits at the 365-day horizon).
    at_risk = {row["arm"]: row["counts"] for row in survival["at_risk"]}
    assert at_risk["axi-cel"] == [90, 54, 50, 50, 50]
    assert "all-failed" not in at_risk


def test_forest_rows_format_differences_and_ratios(page):
    text = text_of(page)
    assert "risk difference (percentage points) -20.0 -33.0 to -7.0 0.003" in text
    assert "hazard ratio 0.62 0.41 to 0.93 < 0.001" in text
    assert "not available: no analysed patient" in text


def test_validation_marks_calibration_targets(page):
    text = text_of(page)
    assert "Validation against published results" in text
    # Only the "by construction" row; a rate calibrated to another cohort counts.
    assert text.count("calibration target, not validation") == 1
    assert ("CRS grade ≥3 13.0% (7.7–21.0%) 14.0% (8.0–22.0%) yes calibration "
            "target, not validation CRS link") in text
    assert "Overall response (best, CR or PR) 82.0% (73.3–88.4%) 80.0% " in text
    assert "Median PFS (days) 180 180 (150–220) yes validation" in text
    assert text.count(SOURCE) == 3


def test_kinetics_and_grade_distributions(context):
    kinetics = context["kinetics"]
    rows = {row["arm"]: row["values"] for row in kinetics["rows"]}
    assert rows["all-failed"] == ["no data"] * 3
    assert rows["axi-cel"][0].endswith("n = 90")
    # CRS grade = i % 5 over the 90 analysed i (i % 10 != 0): the 10 excluded
    # i are all grade 0, so grade 0 has 10 patients (11.1%), grades 1-4 20 each.
    crs = context["grades"]["tables"][0]["rows"]
    assert crs[0]["shares"] == ["11.1%"] + ["22.2%"] * 4
    assert crs[2]["shares"] == ["no data"] * 5


def test_population_sample_size_and_assumptions(page):
    text = text_of(page)
    assert "Effective sample size 812" in text and "Acceptance rate 41.2%" in text
    assert "Parameters whose prior means were shifted log_kexp; log_tumour0" in text
    assert "Target Before calibration Achieved" in text
    assert "CRS grade ≥3 13.0% 20.0% 12.8%" in text
    assert "Complete response (best) 58.0% 50.0% 57.1%" in text
    assert '"log_kexp": 0.21' in text  # nested details as JSON
    assert "two-sided alpha 0.05, power 80%" in text
    assert "-20.0 percentage points 82" in text  # 81.3 patients rounded up
    assert "hazard ratio 0.62 141 121 Schoenfeld" in text
    assert "+0.0 percentage points not estimable: no difference to detect" in text
    assert "Bridging therapy given to no virtual patient." in text
    assert "PFS is optimistic" in text


# -- degraded inputs -------------------------------------------------------------------
def test_empty_result_renders_every_section_as_not_available():
    page = report.render_trial_report(types.SimpleNamespace())
    # Every section but the header (which shows "unnamed trial" and dashes).
    assert page.count("Not available:") == 8
    assert "<svg" not in page and "unnamed trial" in page


def test_single_arm_without_events_or_comparisons():
    ends = endpoints()
    ends["comparisons"], ends["sample_size"] = [], []
    ends["km"] = {"axi-cel": {"t_days": [0.0], "survival": [1.0], "low": [],
                              "high": []}}
    result = make_result(trial=Trial(ARMS[:1]), endpoints=ends, validation=[],
                         population={}, outcomes=outcomes().query("arm == 'axi-cel'"))
    text = text_of(report.render_trial_report(result))
    assert "Not available: no comparison against a reference arm" in text
    assert "Not available: no validation row for ZUMA-1" in text
    assert "Not available: the result has no population calibration summary" in text


def test_dollar_signs_in_arm_names_do_not_start_mathtext():
    arm = "dose $10^8$ \\frac"
    ends = endpoints()
    ends["arms"] = {arm: ends["arms"]["axi-cel"]}
    frame = outcomes().query("arm == 'axi-cel'").assign(arm=arm)
    result = make_result(trial=Trial((Arm(arm),), reference_arm=arm), endpoints=ends,
                         outcomes=frame, validation=[])
    page = report.render_trial_report(result)
    assert "dose $10^8$ \\frac" in page and page.count("<svg ") == 4


def test_comparisons_without_numbers_are_listed_not_plotted():
    ends = endpoints()
    ends["comparisons"] = [{"endpoint": "orr", "estimate": "high", "p_value": "x"}]
    page = report.render_trial_report(make_result(endpoints=ends))
    text = text_of(page)
    assert ("Overall response (best, CR or PR) – – risk difference (percentage "
            "points) not available: not computed – –") in text
    assert page.count("<svg ") == 5  # no forest plot


def test_malformed_section_input_is_reported_not_raised(caplog):
    frame = outcomes().assign(pfs_days="soon")
    text = text_of(report.render_trial_report(make_result(outcomes=frame)))
    assert "Not available: could not be shown (ValueError: could not convert" in text
    assert "section _survival not rendered" in caplog.text
    assert "Validation against published results" in text  # later sections shown


# -- helpers ------------------------------------------------------------------------
def test_weighted_quantiles_with_equal_weights_match_hazen():
    values = np.random.default_rng(3).lognormal(size=37)
    ours = report.weighted_quantiles(values, np.ones(37), report.BOX_QUANTILES)
    assert np.allclose(ours, np.quantile(values, report.BOX_QUANTILES, method="hazen"))


def test_weighted_quantiles_follow_the_weights():
    # Weight 3 on 10 and 1 on 0: the median sits in the heavy value's share.
    assert report.weighted_quantiles([0.0, 10.0], [1.0, 3.0], [0.5])[0] == 10.0 * (
        (0.5 - 0.125) / (0.625 - 0.125))
    with pytest.raises(ValueError, match="weights sum to 0"):
        report.weighted_quantiles([1.0], [0.0], [0.5])


def test_percent_and_proportion_formatting():
    assert report.fmt_percent(0.58) == "58.0%" and report.fmt_percent(None) == "–"
    assert report.fmt_percent(float("nan")) == "–"
    assert report.fmt_proportion({"estimate": 0.13, "low": 0.077, "high": 0.21}) == (
        "13.0% (7.7–21.0%)")
    assert report.fmt_proportion({"estimate": None, "reason": "no model"}) == (
        "not available: no model")
