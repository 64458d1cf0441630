"""Tests of the synthetic demo patient made by ``scripts/make_demo_bundle.py``.

The clinical expectations come from ``reference/clinical-facts.md``: CAR-HEMATOTOX
points (section 1.2, Rejeski 2021, doi:10.1182/blood.2020010543), its HT-high
neutropenia durations (Table 3, section 1.3), EASIX (section 2, Korell 2022
cut-off 4.67) and ASTCT CRS/ICANS grading (section 4, Lee 2019).
"""

from __future__ import annotations

import csv
import datetime as dt
import importlib.util
import json
import uuid
from importlib import resources
from pathlib import Path

import pytest
from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.bundle import Bundle

from cartwin.record.units import canonical_unit, to_canonical

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "make_demo_bundle.py"
UCUM = "http://unitsofmeasure.org"
LOCAL = "https://cartwin.org/fhir/CodeSystem/local"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
BP_PANEL = ("http://loinc.org", "85354-9")
WEIGHT_KG = 78.0


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("make_demo_bundle", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def shipped_text() -> str:
    path = resources.files("cartwin.data").joinpath("demo_patient.json")
    return path.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def bundle(shipped_text) -> dict:
    return json.loads(shipped_text)


@pytest.fixture(scope="module")
def code_table() -> dict[tuple[str, str], str]:
    path = resources.files("cartwin.data.codes").joinpath("codes.csv")
    with path.open(encoding="utf-8") as handle:
        return {(r["system"], r["code"]): r["target"] for r in csv.DictReader(handle)}


def _resources(bundle: dict, kind: str) -> list[dict]:
    return [e["resource"] for e in bundle["entry"]
            if e["resource"]["resourceType"] == kind]


def _code(concept: dict) -> tuple[str, str]:
    coding = concept["coding"][0]
    return coding["system"], coding["code"]


def _infusion_date(bundle: dict) -> dt.date:
    for res in _resources(bundle, "MedicationAdministration"):
        product = _code(res["medicationCodeableConcept"])
        if product == (LOCAL, "axicabtagene-ciloleucel"):
            return dt.datetime.fromisoformat(res["effectivePeriod"]["start"]).date()
    raise AssertionError("no axi-cel infusion in the demo bundle")


def _day(bundle: dict, stamp: str) -> int:
    """Study day in the site's zone: the offset written in the stamp is local."""
    return (dt.datetime.fromisoformat(stamp).date() - _infusion_date(bundle)).days


def _values(bundle: dict, code_table: dict, quantity: str) -> list[tuple]:
    """(study day, stamp, canonical value, comparator) of one cartwin quantity."""
    rows = []
    for obs in _resources(bundle, "Observation"):
        parts = [obs] + obs.get("component", [])
        for part in parts:
            if code_table.get(_code(part["code"])) != quantity:
                continue
            q = part["valueQuantity"]
            value = to_canonical(q["value"], q["code"], quantity)
            stamp = obs["effectiveDateTime"]
            rows.append((_day(bundle, stamp), stamp, value, q.get("comparator")))
    return sorted(rows, key=lambda r: dt.datetime.fromisoformat(r[1]))


def _daily(rows: list[tuple]) -> dict[int, float]:
    return {day: value for day, _, value, _ in rows}


def _events(bundle: dict, system: str, code: str) -> list[dict]:
    out = []
    for res in _resources(bundle, "MedicationAdministration"):
        if _code(res["medicationCodeableConcept"]) == (system, code):
            out.append(res)
    for res in _resources(bundle, "Procedure"):
        if _code(res["code"]) == (system, code):
            out.append(res)
    return out


def _start(res: dict) -> str:
    for key in ("effectivePeriod", "performedPeriod"):
        if key in res:
            return res[key]["start"]
    return res.get("effectiveDateTime") or res["performedDateTime"]


# -- generation ----------------------------------------------------------------
def test_shipped_file_equals_fresh_generation(script, shipped_text):
    assert script.render_bundle(script.build_bundle()) == shipped_text


def test_generation_is_deterministic_and_depends_on_seed(script):
    first = script.render_bundle(script.build_bundle())
    assert script.render_bundle(script.build_bundle()) == first
    assert script.render_bundle(script.build_bundle(seed=1)) != first


def test_check_flag_detects_a_stale_file(script, tmp_path, capsys):
    out = tmp_path / "demo.json"
    assert script.main(["--out", str(out)]) == 0
    assert script.main(["--check", "--out", str(out)]) == 0
    out.write_text(out.read_text(encoding="utf-8").replace("38.2", "38.3"),
                   encoding="utf-8")
    assert script.main(["--check", "--out", str(out)]) == 1
    capsys.readouterr()


# -- FHIR structure ------------------------------------------------------------
def test_every_resource_validates_as_fhir_r4(bundle):
    for entry in bundle["entry"]:
        resource = entry["resource"]
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)
    parsed = Bundle.model_validate(bundle)
    assert parsed.type == "collection"


def test_full_urls_are_uuid5_and_every_reference_resolves(bundle):
    urls = [e["fullUrl"] for e in bundle["entry"]]
    assert len(set(urls)) == len(urls)
    for entry in bundle["entry"]:
        assert entry["fullUrl"] == "urn:uuid:" + entry["resource"]["id"]
        assert uuid.UUID(entry["resource"]["id"]).version == 5
    references = []

    def walk(node):
        if isinstance(node, dict):
            references.extend(v for k, v in node.items() if k == "reference")
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(bundle)
    assert len(references) == len(bundle["entry"]) - 1  # all but the Patient
    assert set(references) <= set(urls)


def test_bundle_and_patient_say_synthetic(bundle):
    tags = {(t["system"], t["code"]) for t in bundle["meta"]["tag"]}
    assert ("http://terminology.hl7.org/CodeSystem/v3-ActReason", "HTEST") in tags
    assert (LOCAL, "synthetic") in tags
    (patient,) = _resources(bundle, "Patient")
    assert patient["name"][0]["text"] == "Synthetic Demo"
    # Direct identifiers are present on purpose: the importer must drop them.
    assert patient["birthDate"] and patient["address"] and patient["identifier"]
    born = dt.date.fromisoformat(patient["birthDate"])
    infusion = _infusion_date(bundle)
    before_birthday = (infusion.month, infusion.day) < (born.month, born.day)
    assert infusion.year - born.year - before_birthday == 61


def test_diagnosis_is_icd10cm_large_b_cell_lymphoma(bundle):
    (condition,) = _resources(bundle, "Condition")
    coding = condition["code"]["coding"][0]
    assert coding["system"] == "http://hl7.org/fhir/sid/icd-10-cm"
    assert coding["code"] == "C83.30"
    assert "large B-cell" in coding["display"]


def test_every_observation_and_event_code_is_in_codes_table(bundle, code_table):
    for obs in _resources(bundle, "Observation"):
        if "component" in obs:
            assert _code(obs["code"]) == BP_PANEL
            codes = [_code(c["code"]) for c in obs["component"]]
        else:
            codes = [_code(obs["code"])]
        assert all(code in code_table for code in codes), codes
    for res in _resources(bundle, "MedicationAdministration"):
        assert _code(res["medicationCodeableConcept"]) in code_table
    for res in _resources(bundle, "Procedure"):
        assert _code(res["code"]) in code_table


def test_quantities_are_ucum_and_convert_to_canonical_units(bundle, code_table):
    units_seen: dict[str, set[str]] = {}
    for obs in _resources(bundle, "Observation"):
        for part in [obs] + obs.get("component", []):
            if "valueQuantity" not in part:
                continue
            q = part["valueQuantity"]
            assert q["system"] == UCUM and q["code"] and q["unit"]
            quantity = code_table[_code(part["code"])]
            to_canonical(q["value"], q["code"], quantity)
            units_seen.setdefault(quantity, set()).add(q["code"])
    # Non-canonical units exercise the importer's conversion.
    assert units_seen["crp"] == {"mg/L", "mg/dL"}
    assert units_seen["creatinine"] == {"mg/dL", "umol/L"}
    assert units_seen["hemoglobin"] == {"g/dL", "g/L"}
    assert canonical_unit("cart_flow") in units_seen["cart_flow"]


def test_every_treatment_timestamp_has_the_winter_offset(bundle):
    stamps = [bundle["timestamp"]]
    for entry in bundle["entry"]:
        res = entry["resource"]
        if res["resourceType"] == "Condition":
            continue  # diagnosed in September: +02:00 (summer time)
        for key in ("effectiveDateTime", "effectivePeriod", "performedPeriod"):
            value = res.get(key)
            stamps.extend(value.values() if isinstance(value, dict) else [value])
    stamps = [s for s in stamps if s is not None]
    assert len(stamps) > 1200
    assert all(s.endswith("+01:00") for s in stamps)


def test_bundle_holds_more_than_1000_values(bundle):
    count = 0
    for obs in _resources(bundle, "Observation"):
        count += "valueQuantity" in obs
        count += sum("valueQuantity" in c for c in obs.get("component", []))
    assert count >= 1000


# -- treatment timeline --------------------------------------------------------
def test_journey_days_and_doses(bundle):
    (apheresis,) = _events(bundle, LOCAL, "leukapheresis")
    assert _day(bundle, _start(apheresis)) == -35
    for rxcui in ("121191", "12574", "32592"):  # rituximab, gemcitabine, oxaliplatin
        (given,) = _events(bundle, RXNORM, rxcui)
        assert _day(bundle, _start(given)) == -25
    for rxcui, mg_per_m2 in (("24698", 30), ("3002", 500)):  # flu, cy
        given = _events(bundle, RXNORM, rxcui)
        assert [_day(bundle, _start(g)) for g in given] == [-5, -4, -3]
        assert {(g["dosage"]["dose"]["value"], g["dosage"]["dose"]["code"])
                for g in given} == {(mg_per_m2, "mg/m2")}
    (infusion,) = _events(bundle, LOCAL, "axicabtagene-ciloleucel")
    dose = infusion["dosage"]["dose"]
    # axi-cel: 2.0e6 cells/kg, at most 2.0e8 cells.
    assert dose["code"] == "{cells}" and dose["value"] == 2.0e6 * WEIGHT_KG <= 2.0e8


def test_tocilizumab_on_day_3_and_no_vasopressor_or_steroid(bundle, code_table):
    (toci,) = _events(bundle, RXNORM, "612865")
    assert _day(bundle, _start(toci)) == 3
    assert toci["dosage"]["dose"]["value"] / WEIGHT_KG == pytest.approx(8.0)
    kinds = {code_table[_code(r["medicationCodeableConcept"])]
             for r in _resources(bundle, "MedicationAdministration")}
    assert not {k for k in kinds if k.startswith(("vasopressor", "corticosteroid"))}


# -- clinical content ----------------------------------------------------------
HEMATOTOX_POINTS = {  # clinical-facts.md section 1.2, canonical units
    "platelets": lambda v: 0 if v > 175 else (2 if v < 75 else 1),  # 10^9/L
    "anc": lambda v: 0 if v > 1.2 else 1,  # 10^9/L
    "hemoglobin": lambda v: 0 if v > 9.0 else 1,  # g/dL
    "crp": lambda v: 0 if v < 30 else 1,  # mg/L (3.0 mg/dL)
    "ferritin": lambda v: 0 if v < 650 else (2 if v > 2000 else 1),  # ng/mL
}


@pytest.mark.parametrize("day", [-6, -5])
def test_pre_lymphodepletion_labs_give_car_hematotox_2(bundle, code_table, day):
    values = {q: _daily(_values(bundle, code_table, q))[day] for q in HEMATOTOX_POINTS}
    points = {q: HEMATOTOX_POINTS[q](v) for q, v in values.items()}
    assert points == {"platelets": 1, "anc": 0, "hemoglobin": 0, "crp": 0,
                      "ferritin": 1}
    # Each value lies >= 15 % from the nearest cut-off, so the score is robust.
    assert 75 * 1.15 < values["platelets"] < 175 / 1.15
    assert 650 * 1.15 < values["ferritin"] < 2000 / 1.15
    assert values["anc"] > 1.2 * 1.15 and values["crp"] < 30 / 1.15


def test_pre_lymphodepletion_easix_is_computable_and_low(bundle, code_table):
    day = {q: _daily(_values(bundle, code_table, q))[-6]
           for q in ("ldh", "creatinine", "platelets")}
    easix = day["ldh"] * day["creatinine"] / day["platelets"]
    assert 1.5 < easix < 2.5  # designed ~2; Korell 2022 high-risk cut-off is 4.67


def test_neutropenia_duration_fits_ht_high(bundle, code_table):
    anc = _daily(_values(bundle, code_table, "anc"))
    assert all(d in anc for d in range(-6, 15))  # daily labs: counting days is exact
    severe_days = [d for d, v in anc.items() if 0 <= d <= 60 and v < 0.5]
    # HT-high median duration of ANC < 500/uL, days 0-60: 10 (US) to 17 (EU)
    # (Rejeski 2021 Table 3); the demo has one contiguous episode in that range.
    assert 10 <= len(severe_days) <= 17
    assert severe_days == list(range(severe_days[0], severe_days[-1] + 1))
    assert min(anc.values()) < 0.1 and anc[42] > 1.5
    platelets = _daily(_values(bundle, code_table, "platelets"))
    assert min(platelets.values()) < 50  # severe thrombocytopenia


def test_crp_ferritin_il6_rise_with_crs(bundle, code_table):
    peaks = {}
    for quantity in ("crp", "ferritin", "il6"):
        daily = _daily(_values(bundle, code_table, quantity))
        peaks[quantity] = max(daily, key=daily.get)
    assert peaks == {"crp": 3, "ferritin": 4, "il6": 4}


def _daily_crs_grade(bundle: dict, code_table: dict, day: int) -> int:
    """ASTCT 2019 CRS grade for one day, from the bundle's data only."""
    temps = [v for d, _, v, _ in _values(bundle, code_table, "temperature") if d == day]
    sbp = [v for d, _, v, _ in _values(bundle, code_table, "systolic_bp") if d == day]
    (oxygen,) = _events(bundle, LOCAL, "oxygen-low-flow")
    period = oxygen["performedPeriod"]
    on_oxygen = _day(bundle, period["start"]) <= day <= _day(bundle, period["end"])
    (toci,) = _events(bundle, RXNORM, "612865")
    fever_or_treated = max(temps) >= 38.0 or day >= _day(bundle, _start(toci))
    if fever_or_treated and (min(sbp) < 90 or on_oxygen):
        return 2
    return 1 if max(temps) >= 38.0 else 0


def test_crs_is_grade_2_from_day_3_to_5_and_resolves_by_day_6(bundle, code_table):
    grades = {day: _daily_crs_grade(bundle, code_table, day) for day in range(0, 15)}
    assert grades == {**dict.fromkeys(range(15), 0), 2: 1, 3: 2, 4: 2, 5: 2}
    fever = [d for d, _, v, _ in _values(bundle, code_table, "temperature") if v >= 38]
    assert min(fever) == 2 and max(fever) == 3
    spo2 = _values(bundle, code_table, "spo2")
    (oxygen,) = _events(bundle, LOCAL, "oxygen-low-flow")
    start = dt.datetime.fromisoformat(oxygen["performedPeriod"]["start"])
    before = [v for _, s, v, _ in spo2 if dt.datetime.fromisoformat(s) < start]
    assert 90 <= min(before) <= 92


def test_ice_scores_give_transient_icans_grade_1(bundle, code_table):
    ice = _daily(_values(bundle, code_table, "ice_score"))
    assert sorted(ice) == list(range(15))
    # ICE 7-9 = ICANS grade 1; 10 = no ICANS (clinical-facts.md section 4.3).
    assert {d: v for d, v in ice.items() if v < 10} == {6: 8}


def test_cart_flow_peaks_in_tens_and_is_censored_early_and_late(bundle, code_table):
    rows = _values(bundle, code_table, "cart_flow")
    assert [r[0] for r in rows] == [0, 0, 3, 5, 7, 9, 11, 14, 21, 28, 42, 60, 90]
    censored = [(d, v) for d, _, v, cmp in rows if cmp == "<"]
    assert censored == [(0, 1.0), (60, 1.0), (90, 1.0)]
    day, _, peak, _ = max(rows, key=lambda r: r[2])
    assert 7 <= day <= 14 and 10 <= peak <= 100
    qpcr = _values(bundle, code_table, "cart_qpcr")
    assert [r[0] for r in qpcr] == [7, 14, 28, 90] and qpcr[-1][3] is None


def test_vitals_every_four_hours_during_admission(bundle, code_table):
    for quantity in ("temperature", "systolic_bp", "diastolic_bp", "heart_rate",
                     "respiratory_rate", "spo2"):
        days = [d for d, _, _, _ in _values(bundle, code_table, quantity)]
        assert all(days.count(d) >= 6 for d in range(-1, 15)), quantity
        assert all(days.count(d) == 1 for d in range(15, 31)), quantity
