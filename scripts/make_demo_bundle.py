"""Make the synthetic demo patient: a FHIR R4 ``collection`` Bundle.

**Everything in the output is synthetic.** No value comes from a real person.
The patient ("Synthetic Demo", 61-year-old man) has relapsed diffuse large
B-cell lymphoma and receives axicabtagene ciloleucel (axi-cel). The Bundle
carries ``meta.tag`` HTEST ("test health data", HL7 v3 ActReason) and a local
``synthetic`` tag; the Patient has the same tags. The script is deterministic:
one seeded :class:`numpy.random.Generator` (PCG64, :data:`SEED`) adds noise in a
fixed order, identifiers are UUID5 of fixed keys, and running it twice writes
byte-identical files (``tests/test_demo_bundle.py`` checks the shipped file
against a fresh run). A NumPy release that changed the PCG64/normal stream
would change the file; rerun the script then.

Run ``python scripts/make_demo_bundle.py`` from the repository root to rewrite
``src/cartwin/data/demo_patient.json``; ``--check`` only compares.

Timeline (site zone Europe/Berlin; every instant lies in winter time, so every
timestamp is written with offset +01:00; day 0 = 2023-12-11, infusion 10:30)

- day -35 leukapheresis (Procedure, 08:30-13:00);
- day -25 bridging R-GemOx (rituximab 375, gemcitabine 1000, oxaliplatin
  100 mg/m2; MedicationAdministration);
- days -5, -4, -3 lymphodepletion: fludarabine 30 mg/m2 and cyclophosphamide
  500 mg/m2 (MedicationAdministration, dose unit ``mg/m2``);
- day 0 axi-cel 2.0e6 CAR T cells/kg x 78 kg = 1.56e8 cells (label cap 2e8),
  dose unit ``{cells}``;
- CRS grade 2 (ASTCT 2019, clinical-facts.md section 4.1): fever >= 38 degC
  from day 2 02:00 to day 3 ~16:00; systolic BP < 90 mmHg from day 3 06:00 to
  day 4 22:00 (fluids only, **no vasopressor**); SpO2 90-92 % on day 3 06:00-
  08:00, then low-flow nasal cannula oxygen (Procedure ``oxygen-low-flow``,
  day 3 09:00 to day 5 10:00). Tocilizumab 8 mg/kg (624 mg; RxNorm 612865) on
  day 3 at 11:00; acetaminophen on day 2. Expected daily maximum CRS grade:
  day 2 -> 1, days 3-5 -> 2, day 6 onward -> 0. No grade >= 3. Grade 2 with
  tocilizumab fits ZUMA-1 (CRS any grade 93 %, grade >= 3 13 %, tocilizumab
  45 %; clinical-facts.md section 8, Ther Adv Hematol 2019,
  doi:10.1177/2040620719841581).
- ICANS: daily ICE score (09:00, days 0-14) is 10 except **ICE 8 on day 6**, a
  transient ICANS grade 1 (ICE 7-9, section 4.3) without steroids; maximum
  ICANS grade 1.

How values were chosen

- CAR T kinetics follow the multiphasic shape of Stein 2019 (section 5.1;
  doi:10.1002/psp4.12388): exponential expansion to Tmax then bi-exponential
  decline. Flow cytometry (cells/uL): Tmax 9 d and alpha 0.16 /day from Stein
  Table 1; the scale (Cmax 45 cells/uL, "tens of cells per uL") and
  fold-expansion 30 are chosen for flow, and the slow phase (FB 0.06,
  beta 0.03 /day) is faster than Stein's so that levels fall below the flow
  LLOQ (1 cell/uL, written as ``comparator "<"``) by days 60 and 90; day 0
  before infusion is also < LLOQ. qPCR (copies/ug gDNA, days 7, 14, 28, 90)
  uses Stein's typical values with Cmax halved to 12 000 copies/ug (DLBCL
  expands less than B-ALL, Awasthi 2020, section 5.1), so it stays detectable
  at day 90. Log-normal noise SD 0.15 (flow) and 0.2 (qPCR).
- CAR-HEMATOTOX (section 1.2, Rejeski 2021, doi:10.1182/blood.2020010543):
  pre-lymphodepletion labs (days -6 and -5, 06:00) are set to platelets
  ~140 x 10^9/L (1 point), ferritin ~950 ng/mL (1 point), ANC ~1.9 x 10^9/L,
  Hb ~10.8 g/dL, CRP ~12 mg/L (0 points each): **intended score 2, HT-high**.
  Each value lies at least 15 % from its cut-off so noise cannot change a
  point. EASIX (section 2) = LDH ~310 U/L x creatinine ~0.88 mg/dL /
  platelets ~140 x 10^9/L ~ 2, below the Korell 2022 EASIX-pre cut-off 4.67.
- Neutrophils after fludarabine/cyclophosphamide: nadir < 0.1 x 10^9/L in the
  first week, ANC < 0.5 x 10^9/L from about day 0 to day 11 (about 12 days,
  between the HT-high medians of 10 and 17 days in Rejeski 2021 Table 3,
  section 1.3), recovery by day 14, a second shallow dip around day 24
  (biphasic recovery, section 6) and recovery by day 42. Platelets fall below
  50 x 10^9/L for about a week (severe thrombocytopenia in 87 % of HT-high
  patients, Table 3).
- CRP and ferritin rise with CRS (peaks day 3 and day 4), fall after
  tocilizumab; IL-6 peaks on day 4 (serum IL-6 rises after IL-6 receptor
  blockade); creatinine rises mildly with hypotension. These shapes are
  illustrative, not fitted to a cohort.
- Units: canonical UCUM units except where a unit conversion should be
  exercised: CRP in mg/dL on days -35, -25 and -6 (outpatient lab),
  creatinine in umol/L on days -35, -25, 42, 60 and 90, haemoglobin in g/L on
  days 42, 60 and 90, platelets in 10*3/uL on day -35.

Sampling: labs daily (06:00) from day -6 to day 14, then days 17, 20, 24, 27,
30, 42, 60 and 90, plus days -35 and -25; IL-6 on nine days. Vitals
(temperature, blood-pressure panel LOINC 85354-9 with systolic and diastolic
components, heart rate, respiratory rate, SpO2) every 4 hours from day -1 to
day 14, hourly during CRS (day 2 00:00 to day 5 12:00), daily at 08:00 on
days 15-30 and at the visits on days 42, 60 and 90.

The Patient carries a name, an identifier, a birth date and an address on
purpose: an importer must drop them (keep only the pseudonym and the age).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import functools
import json
import math
import uuid
from importlib import resources
from pathlib import Path

import numpy as np

SEED = 20231211
#: Europe/Berlin in winter (CET). All instants below fall between
#: 2023-10-29 and 2024-03-31, so the offset never changes.
SITE_TZ = dt.timezone(dt.timedelta(hours=1))
INFUSION_START = dt.datetime(2023, 12, 11, 10, 30, tzinfo=SITE_TZ)
BUNDLE_TIMESTAMP = "2024-03-11T12:00:00+01:00"
OUTPUT = Path(__file__).resolve().parents[1] / "src/cartwin/data/demo_patient.json"
NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://cartwin.org/fhir/demo-patient")

LOCAL = "https://cartwin.org/fhir/CodeSystem/local"
LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
UCUM = "http://unitsofmeasure.org"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"

WEIGHT_KG = 78.0
HEIGHT_CM = 176.0
#: Body surface area, Mosteller: sqrt(height_cm * weight_kg / 3600), m2.
BSA_M2 = math.sqrt(HEIGHT_CM * WEIGHT_KG / 3600.0)
#: axi-cel label dose: 2.0e6 CAR-positive viable T cells per kg, at most 2e8.
CART_DOSE_CELLS = int(min(2.0e6 * WEIGHT_KG, 2.0e8))
TOCILIZUMAB_MG_PER_KG = 8.0
FLOW_LLOQ = 1.0  # cells/uL
QPCR_LLOQ = 5.0  # copies/ug

SYNTHETIC_TAGS = [
    {
        "system": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
        "code": "HTEST",
        "display": "test health data",
    },
    {
        "system": LOCAL,
        "code": "synthetic",
        "display": "Synthetic demo patient made by scripts/make_demo_bundle.py "
        f"(seed {SEED}); not a real person",
    },
]

#: cartwin quantity -> (system, code) used for it; must exist in codes.csv.
QUANTITY_CODES = {
    "crp": (LOINC, "1988-5"),
    "ferritin": (LOINC, "2276-4"),
    "ldh": (LOINC, "2532-0"),
    "creatinine": (LOINC, "2160-0"),
    "hemoglobin": (LOINC, "718-7"),
    "platelets": (LOINC, "777-3"),
    "anc": (LOINC, "751-8"),
    "wbc": (LOINC, "6690-2"),
    "alc": (LOINC, "731-0"),
    "il6": (LOINC, "26881-3"),
    "temperature": (LOINC, "8310-5"),
    "systolic_bp": (LOINC, "8480-6"),
    "diastolic_bp": (LOINC, "8462-4"),
    "heart_rate": (LOINC, "8867-4"),
    "respiratory_rate": (LOINC, "9279-1"),
    "spo2": (LOINC, "59408-5"),
    "body_weight": (LOINC, "29463-7"),
    "body_height": (LOINC, "8302-2"),
    "cart_flow": (LOCAL, "cart-flow"),
    "cart_qpcr": (LOCAL, "cart-qpcr"),
    "ice_score": (LOCAL, "ice-score"),
}
BP_PANEL = (LOINC, "85354-9", "Blood pressure panel with all children optional")

#: UCUM code -> human-readable unit.
UNIT_TEXT = {
    "mg/L": "mg/L",
    "mg/dL": "mg/dL",
    "ng/mL": "ng/mL",
    "U/L": "U/L",
    "umol/L": "µmol/L",
    "g/dL": "g/dL",
    "g/L": "g/L",
    "10*9/L": "10^9/L",
    "10*3/uL": "10^3/µL",
    "pg/mL": "pg/mL",
    "Cel": "°C",
    "mm[Hg]": "mmHg",
    "/min": "/min",
    "%": "%",
    "kg": "kg",
    "cm": "cm",
    "/uL": "cells/µL",
    "{copies}/ug": "copies/µg",
    "{score}": "score",
    "mg/m2": "mg/m²",
    "mg": "mg",
    "{cells}": "cells",
}

# Lab trajectories: (study day, value in canonical unit) knots, interpolated in
# log space; the noise is a log-normal coefficient of variation.
LAB_KNOTS = {
    "anc": [(-35, 2.8), (-25, 2.4), (-20, 1.6), (-6, 1.9), (-4, 1.7), (-2, 0.9),
            (-1, 0.55), (0, 0.32), (1, 0.15), (2, 0.07), (4, 0.03), (7, 0.03),
            (9, 0.08), (11, 0.3), (12, 0.55), (14, 1.2), (17, 1.4), (20, 0.9),
            (24, 0.6), (27, 0.75), (30, 1.1), (42, 1.7), (60, 2.2), (90, 2.6)],
    "alc": [(-35, 0.9), (-25, 0.7), (-6, 0.6), (-4, 0.3), (-2, 0.08), (0, 0.05),
            (3, 0.08), (7, 0.35), (9, 0.5), (11, 0.4), (14, 0.3), (30, 0.35),
            (60, 0.5), (90, 0.7)],
    "platelets": [(-35, 185), (-25, 160), (-18, 120), (-6, 140), (-3, 128),
                  (0, 105), (3, 80), (6, 52), (9, 38), (12, 34), (14, 40),
                  (17, 55), (20, 62), (24, 70), (30, 88), (42, 105), (60, 125),
                  (90, 150)],
    "hemoglobin": [(-35, 11.9), (-25, 11.4), (-6, 10.8), (-3, 10.5), (0, 10.1),
                   (5, 9.2), (10, 8.6), (14, 8.8), (20, 9.3), (30, 9.8),
                   (42, 10.6), (60, 11.4), (90, 12.2)],
    "crp": [(-35, 9), (-25, 14), (-6, 12), (-4, 11), (-1, 13), (0, 16), (1, 34),
            (2, 88), (3, 165), (4, 120), (5, 62), (6, 31), (7, 18), (9, 9),
            (14, 5), (30, 4), (60, 3), (90, 2.5)],
    "ferritin": [(-35, 640), (-25, 760), (-6, 950), (-3, 980), (0, 1050),
                 (2, 1500), (3, 2300), (4, 3100), (5, 2900), (7, 2100),
                 (10, 1500), (14, 1150), (20, 950), (30, 800), (60, 560),
                 (90, 450)],
    "ldh": [(-35, 390), (-25, 365), (-6, 310), (-3, 295), (0, 280), (3, 360),
            (4, 410), (5, 395), (7, 330), (14, 260), (30, 230), (90, 205)],
    "creatinine": [(-35, 0.92), (-6, 0.88), (-3, 0.85), (0, 0.86), (2, 0.9),
                   (3, 1.15), (4, 1.28), (5, 1.08), (7, 0.92), (14, 0.88),
                   (90, 0.9)],
    "il6": [(-6, 5), (0, 11), (1, 42), (2, 190), (3, 780), (4, 1500), (5, 520),
            (7, 45), (14, 9)],
}
LAB_CV = {"anc": 0.1, "alc": 0.1, "platelets": 0.05, "hemoglobin": 0.03,
          "crp": 0.08, "ferritin": 0.06, "ldh": 0.05, "creatinine": 0.04,
          "il6": 0.1}
#: Monocytes plus other white cells (not reported), added to WBC.
OTHER_WBC_KNOTS = [(-35, 0.55), (-6, 0.45), (-2, 0.2), (0, 0.08), (7, 0.08),
                   (11, 0.25), (14, 0.45), (30, 0.45), (90, 0.55)]
LAB_PANEL = ("crp", "ferritin", "ldh", "creatinine", "hemoglobin", "platelets",
             "anc", "wbc", "alc")
LAB_DAYS = (-35, -25, *range(-6, 15), 17, 20, 24, 27, 30, 42, 60, 90)
IL6_DAYS = (-6, 0, 1, 2, 3, 4, 5, 7, 14)
#: (quantity, days) reported in a non-canonical unit: (ucum, factor from canonical).
OTHER_UNITS = {
    "crp": ((-35, -25, -6), "mg/dL", 0.1),
    "creatinine": ((-35, -25, 42, 60, 90), "umol/L", 1e4 / 113.12),
    "hemoglobin": ((42, 60, 90), "g/L", 10.0),
    "platelets": ((-35,), "10*3/uL", 1.0),
}
CANONICAL = {"crp": "mg/L", "ferritin": "ng/mL", "ldh": "U/L",
             "creatinine": "mg/dL", "hemoglobin": "g/dL", "platelets": "10*9/L",
             "anc": "10*9/L", "wbc": "10*9/L", "alc": "10*9/L", "il6": "pg/mL"}
DECIMALS = {"crp": 1, "ferritin": 0, "ldh": 0, "creatinine": 2, "hemoglobin": 1,
            "platelets": 0, "anc": 2, "wbc": 2, "alc": 2, "il6": 1}

# CAR T kinetics (Stein 2019 shape; see module docstring).
FLOW_SHAPE = {"cmax": 45.0, "tmax": 9.0, "fold": 30.0, "alpha": 0.16,
              "fb": 0.06, "beta": 0.03}
QPCR_SHAPE = {"cmax": 12000.0, "tmax": 9.3, "fold": 3900.0, "alpha": 0.16,
              "fb": 0.0079, "beta": 0.0032}
CART_FLOW_DAYS = (3, 5, 7, 9, 11, 14, 21, 28, 42, 60, 90)
CART_QPCR_DAYS = (7, 14, 28, 90)
ICE_DAYS = tuple(range(0, 15))
ICE_LOW = {6: 8}

# CRS windows, in local (day, hour) pairs.
FEVER = ((2, 2), (3, 16))
HYPOTENSION = ((3, 6), (4, 22))
HYPOXIA = ((3, 6), (3, 9))
OXYGEN = ((3, 9), (5, 10))
TOCILIZUMAB = (3, 11)


# -- codes, time and identifiers -----------------------------------------------
@functools.cache
def load_code_table() -> dict[tuple[str, str], str]:
    """Return ``{(system, code): display}`` from the shipped codes.csv."""
    path = resources.files("cartwin.data.codes").joinpath("codes.csv")
    with path.open(encoding="utf-8") as handle:
        return {(r["system"], r["code"]): r["display"] for r in csv.DictReader(handle)}


def coding(system: str, code: str) -> dict:
    """Coding with the display of codes.csv; fails for a code not listed there."""
    table = load_code_table()
    if (system, code) not in table:
        raise ValueError(f"code {system}|{code} is not in codes.csv")
    return {"system": system, "code": code, "display": table[(system, code)]}


def local_time(day: int, hour: int, minute: int = 0) -> dt.datetime:
    """Site-local instant on study ``day`` at ``hour:minute``."""
    date = INFUSION_START.date() + dt.timedelta(days=day)
    return dt.datetime.combine(date, dt.time(hour, minute), tzinfo=SITE_TZ)


def days_since_infusion(when: dt.datetime) -> float:
    """Fractional days from the infusion instant."""
    return (when - INFUSION_START).total_seconds() / 86400.0


def stamp(when: dt.datetime) -> str:
    """ISO 8601 with offset, seconds precision."""
    return when.isoformat(timespec="seconds")


def resource_uuid(key: str) -> str:
    """Deterministic UUID5 of a resource key."""
    return str(uuid.uuid5(NAMESPACE, key))


def quantity(value: float | int, ucum: str, comparator: str | None = None) -> dict:
    """FHIR Quantity with UCUM code and human unit."""
    out: dict = {"value": value}
    if comparator:
        out["comparator"] = comparator
    out.update({"unit": UNIT_TEXT[ucum], "system": UCUM, "code": ucum})
    return out


def within(when: dt.datetime, window: tuple) -> bool:
    """Whether ``when`` lies in a ``((day, hour), (day, hour))`` window."""
    return local_time(*window[0]) <= when < local_time(*window[1])


class EntryList:
    """Bundle entries in insertion order with ``urn:uuid`` full URLs."""

    def __init__(self) -> None:
        self.entries: list[dict] = []
        self.keys: set[str] = set()

    def add(self, key: str, resource: dict) -> str:
        """Add ``resource`` under a unique key; return its ``urn:uuid`` reference."""
        if key in self.keys:
            raise ValueError(f"duplicate resource key {key!r}")
        self.keys.add(key)
        rid = resource_uuid(key)
        body = {"resourceType": resource.pop("resourceType"), "id": rid, **resource}
        self.entries.append({"fullUrl": f"urn:uuid:{rid}", "resource": body})
        return f"urn:uuid:{rid}"


PATIENT_REF = f"urn:uuid:{resource_uuid('patient')}"


# -- resources -----------------------------------------------------------------
def patient() -> dict:
    """The Patient, with identifiers an importer must drop."""
    return {
        "resourceType": "Patient",
        "meta": {"tag": SYNTHETIC_TAGS},
        "identifier": [{"system": "https://cartwin.org/fhir/demo-mrn",
                        "value": "DEMO-0001"}],
        "active": True,
        "name": [{"use": "official", "text": "Synthetic Demo", "family": "Demo",
                  "given": ["Synthetic"]}],
        "gender": "male",
        "birthDate": "1962-05-14",
        "address": [{"line": ["Musterstraße 1"], "city": "Berlin",
                     "postalCode": "10115", "country": "DE"}],
    }


def condition() -> dict:
    """Relapsed DLBCL, ICD-10-CM C83.30."""
    hl7 = "http://terminology.hl7.org/CodeSystem/"
    return {
        "resourceType": "Condition",
        "clinicalStatus": {"coding": [{"system": hl7 + "condition-clinical",
                                       "code": "active"}]},
        "verificationStatus": {"coding": [{"system": hl7 + "condition-ver-status",
                                           "code": "confirmed"}]},
        "category": [{"coding": [{"system": hl7 + "condition-category",
                                  "code": "problem-list-item"}]}],
        "code": {"coding": [{"system": ICD10CM, "code": "C83.30",
                             "display": "Diffuse large B-cell lymphoma, "
                                        "unspecified site"}],
                 "text": "Diffuse large B-cell lymphoma, relapsed after two lines"},
        "subject": {"reference": PATIENT_REF},
        "onsetDateTime": "2022-09-20T09:00:00+02:00",
        "recordedDate": "2022-09-20T09:00:00+02:00",
    }


def observation(quantity_key: str, when: dt.datetime, value_quantity: dict,
                category: str) -> dict:
    """Observation of one cartwin quantity."""
    code = coding(*QUANTITY_CODES[quantity_key])
    return {
        "resourceType": "Observation",
        "status": "final",
        "category": [{"coding": [{"system": OBS_CATEGORY, "code": category}]}],
        "code": {"coding": [code], "text": code["display"]},
        "subject": {"reference": PATIENT_REF},
        "effectiveDateTime": stamp(when),
        "valueQuantity": value_quantity,
    }


def bp_panel(when: dt.datetime, systolic: int, diastolic: int) -> dict:
    """Blood-pressure panel with systolic and diastolic components."""
    system, code, display = BP_PANEL
    components = [
        {"code": {"coding": [coding(*QUANTITY_CODES[key])]},
         "valueQuantity": quantity(value, "mm[Hg]")}
        for key, value in (("systolic_bp", systolic), ("diastolic_bp", diastolic))
    ]
    return {
        "resourceType": "Observation",
        "status": "final",
        "category": [{"coding": [{"system": OBS_CATEGORY, "code": "vital-signs"}]}],
        "code": {"coding": [{"system": system, "code": code, "display": display}],
                 "text": "Blood pressure"},
        "subject": {"reference": PATIENT_REF},
        "effectiveDateTime": stamp(when),
        "component": components,
    }


def procedure(code: tuple[str, str], start: dt.datetime, end: dt.datetime,
              note: str = "") -> dict:
    """Completed Procedure over a period."""
    resource = {
        "resourceType": "Procedure",
        "status": "completed",
        "code": {"coding": [coding(*code)]},
        "subject": {"reference": PATIENT_REF},
        "performedPeriod": {"start": stamp(start), "end": stamp(end)},
    }
    if note:
        resource["note"] = [{"text": note}]
    return resource


def administration(code: tuple[str, str], start: dt.datetime,
                   end: dt.datetime | None, dose: dict, text: str) -> dict:
    """Completed MedicationAdministration (a period for infusions)."""
    resource = {
        "resourceType": "MedicationAdministration",
        "status": "completed",
        "medicationCodeableConcept": {"coding": [coding(*code)]},
        "subject": {"reference": PATIENT_REF},
    }
    if end is None:
        resource["effectiveDateTime"] = stamp(start)
    else:
        resource["effectivePeriod"] = {"start": stamp(start), "end": stamp(end)}
    resource["dosage"] = {"text": text, "dose": dose}
    return resource


# -- therapy -------------------------------------------------------------------
def _per_m2(name: str, mg_per_m2: float) -> tuple[dict, str]:
    dose = quantity(mg_per_m2, "mg/m2")
    text = (f"{name} {mg_per_m2:g} mg/m2 = {mg_per_m2 * BSA_M2:.0f} mg "
            f"(BSA {BSA_M2:.2f} m2, Mosteller)")
    return dose, text


def add_chemotherapy(entries: EntryList) -> None:
    """Bridging R-GemOx on day -25 and flu/cy lymphodepletion on days -5..-3."""
    bridging = (("rituximab", "121191", 375, (9, 0), (13, 0)),
                ("gemcitabine", "12574", 1000, (13, 30), (14, 0)),
                ("oxaliplatin", "32592", 100, (14, 15), (16, 15)))
    for name, rxcui, mg_per_m2, start, end in bridging:
        dose, text = _per_m2(name, mg_per_m2)
        entries.add(f"bridging/{name}", administration(
            (RXNORM, rxcui), local_time(-25, *start), local_time(-25, *end),
            dose, text + ", R-GemOx bridging"))
    for day in (-5, -4, -3):
        for name, rxcui, mg_per_m2, start, end in (
            ("fludarabine", "24698", 30, (10, 0), (10, 30)),
            ("cyclophosphamide", "3002", 500, (11, 0), (12, 0)),
        ):
            dose, text = _per_m2(name, mg_per_m2)
            entries.add(f"lymphodepletion/{name}/{day}", administration(
                (RXNORM, rxcui), local_time(day, *start), local_time(day, *end),
                dose, text))


def add_cell_therapy(entries: EntryList) -> None:
    """Leukapheresis, axi-cel infusion and CRS treatment (no vasopressor)."""
    entries.add("leukapheresis", procedure(
        (LOCAL, "leukapheresis"), local_time(-35, 8, 30), local_time(-35, 13),
        "apheresis for axicabtagene ciloleucel manufacturing"))
    entries.add("infusion", administration(
        (LOCAL, "axicabtagene-ciloleucel"), INFUSION_START,
        INFUSION_START + dt.timedelta(minutes=18),
        quantity(CART_DOSE_CELLS, "{cells}"),
        f"2.0e6 CAR T cells/kg x {WEIGHT_KG:g} kg (label maximum 2.0e8)"))
    for hour in (3, 15):
        entries.add(f"acetaminophen/{hour}", administration(
            (RXNORM, "161"), local_time(2, hour), None, quantity(1000, "mg"),
            "acetaminophen 1000 mg orally for fever"))
    toci_mg = TOCILIZUMAB_MG_PER_KG * WEIGHT_KG
    entries.add("tocilizumab", administration(
        (RXNORM, "612865"), local_time(*TOCILIZUMAB),
        local_time(TOCILIZUMAB[0], TOCILIZUMAB[1] + 1), quantity(toci_mg, "mg"),
        f"tocilizumab {TOCILIZUMAB_MG_PER_KG:g} mg/kg x {WEIGHT_KG:g} kg = "
        f"{toci_mg:g} mg IV over 1 h for CRS grade 2"))
    entries.add("oxygen", procedure(
        (LOCAL, "oxygen-low-flow"), local_time(*OXYGEN[0]), local_time(*OXYGEN[1]),
        "nasal cannula 2 L/min"))


# -- laboratory ----------------------------------------------------------------
def interp_log(knots: list[tuple[float, float]], t: float) -> float:
    """Log-linear interpolation between ``(day, value)`` knots (flat outside)."""
    days, values = zip(*knots)
    return float(np.exp(np.interp(t, days, np.log(values))))


def lab_panel(rng: np.random.Generator, day: int) -> dict[str, float]:
    """True (unrounded) lab values in canonical units for one morning draw."""
    t = days_since_infusion(local_time(day, 6))
    values = {}
    for name in ("crp", "ferritin", "ldh", "creatinine", "hemoglobin",
                 "platelets", "anc", "alc"):
        noise = math.exp(rng.normal(0.0, LAB_CV[name]))
        values[name] = interp_log(LAB_KNOTS[name], t) * noise
    other = interp_log(OTHER_WBC_KNOTS, t) * math.exp(rng.normal(0.0, 0.1))
    values["wbc"] = values["anc"] + values["alc"] + other
    if day in IL6_DAYS:
        noise = math.exp(rng.normal(0.0, LAB_CV["il6"]))
        values["il6"] = interp_log(LAB_KNOTS["il6"], t) * noise
    return values


def reported(name: str, day: int, value: float) -> dict:
    """Round as a lab reports; switch to the site's other unit on listed days."""
    ucum, decimals = CANONICAL[name], DECIMALS[name]
    if name in OTHER_UNITS and day in OTHER_UNITS[name][0]:
        _, ucum, factor = OTHER_UNITS[name]
        value *= factor
        decimals = 2 if ucum == "mg/dL" else 0
    rounded = round(value, decimals)
    if decimals == 0:
        rounded = int(rounded)
    return quantity(max(rounded, 10.0 ** -decimals), ucum)


def add_labs(entries: EntryList, rng: np.random.Generator) -> None:
    """Morning labs on :data:`LAB_DAYS` (IL-6 on :data:`IL6_DAYS`)."""
    for day in LAB_DAYS:
        when = local_time(day, 6)
        for name, value in lab_panel(rng, day).items():
            entries.add(f"lab/{name}/{day}", observation(
                name, when, reported(name, day, value), "laboratory"))


# -- CAR T cells and ICE -------------------------------------------------------
def stein_level(shape: dict, t: float) -> float:
    """Multiphasic CAR T level (Stein 2019): expansion, then bi-exponential."""
    if t < shape["tmax"]:
        rho = math.log(shape["fold"]) / shape["tmax"]
        return shape["cmax"] / shape["fold"] * math.exp(rho * t)
    since = t - shape["tmax"]
    fast = (1.0 - shape["fb"]) * math.exp(-shape["alpha"] * since)
    return shape["cmax"] * (fast + shape["fb"] * math.exp(-shape["beta"] * since))


def cart_quantity(level: float, lloq: float, ucum: str, decimals: int) -> dict:
    """Rounded level, or ``< LLOQ`` when below the limit of quantification."""
    if level < lloq:
        return quantity(lloq, ucum, "<")
    rounded = round(level, decimals)
    return quantity(int(rounded) if decimals == 0 else rounded, ucum)


def add_cart_levels(entries: EntryList, rng: np.random.Generator) -> None:
    """Flow cytometry on days 0 (pre/post) to 90 and qPCR on four days."""
    pre = local_time(0, 9)
    entries.add("cart_flow/0-pre", observation(
        "cart_flow", pre, quantity(FLOW_LLOQ, "/uL", "<"), "laboratory"))
    post = INFUSION_START + dt.timedelta(hours=1)
    times = [("0-post", post)] + [(str(d), local_time(d, 7)) for d in CART_FLOW_DAYS]
    for label, when in times:
        level = stein_level(FLOW_SHAPE, days_since_infusion(when))
        level *= math.exp(rng.normal(0.0, 0.15))
        entries.add(f"cart_flow/{label}", observation(
            "cart_flow", when, cart_quantity(level, FLOW_LLOQ, "/uL", 1),
            "laboratory"))
    for day in CART_QPCR_DAYS:
        when = local_time(day, 7)
        level = stein_level(QPCR_SHAPE, days_since_infusion(when))
        level *= math.exp(rng.normal(0.0, 0.2))
        entries.add(f"cart_qpcr/{day}", observation(
            "cart_qpcr", when, cart_quantity(level, QPCR_LLOQ, "{copies}/ug", 0),
            "laboratory"))


def add_ice_scores(entries: EntryList) -> None:
    """Daily ICE score at 09:00; ICE 8 (ICANS grade 1) on day 6 only."""
    for day in ICE_DAYS:
        score = ICE_LOW.get(day, 10)
        entries.add(f"ice/{day}", observation(
            "ice_score", local_time(day, 9), quantity(score, "{score}"), "survey"))


def add_body_size(entries: EntryList) -> None:
    """Height once, weight at visits (the dosing weight is :data:`WEIGHT_KG`)."""
    entries.add("height", observation(
        "body_height", local_time(-35, 7, 30), quantity(HEIGHT_CM, "cm"),
        "vital-signs"))
    weights = {-35: 78.6, -6: WEIGHT_KG, 0: 77.8, 14: 76.9, 30: 76.5, 90: 77.4}
    for day, kg in weights.items():
        entries.add(f"weight/{day}", observation(
            "body_weight", local_time(day, 7, 30), quantity(kg, "kg"), "vital-signs"))


# -- vital signs ---------------------------------------------------------------
VITAL_KNOTS = {
    "temperature": [(-40, 36.7), (1.55, 36.9), (1.65, 38.3), (2.2, 39.1),
                    (2.9, 39.4), (3.05, 39.2), (3.3, 37.6), (3.6, 37.0),
                    (100, 36.8)],
    "systolic_bp": [(-40, 122), (2.5, 114), (2.78, 88), (3.5, 84), (4.4, 87),
                    (4.55, 100), (6, 118), (100, 124)],
    "heart_rate": [(-40, 78), (1.6, 84), (2.0, 104), (3.0, 116), (3.5, 108),
                   (4.5, 96), (5.5, 84), (100, 76)],
    "respiratory_rate": [(-40, 15), (2.7, 18), (2.9, 22), (4.0, 20), (5.0, 17),
                         (100, 15)],
    "spo2": [(-40, 97), (2.7, 95), (2.85, 91), (2.93, 90), (2.95, 95), (4.9, 95),
             (5.5, 97), (100, 97)],
}
VITAL_SD = {"temperature": 0.12, "systolic_bp": 4.0, "heart_rate": 4.0,
            "respiratory_rate": 1.0, "spo2": 0.6}


def vital_times() -> list[dt.datetime]:
    """Every 4 h days -1..14, hourly during CRS, daily otherwise."""
    times = {local_time(day, 9) for day in range(-6, -1)}
    times |= {local_time(day, h) for day in range(-1, 15) for h in range(2, 24, 4)}
    start = local_time(2, 0)
    times |= {start + dt.timedelta(hours=h) for h in range(3 * 24 + 13)}
    times |= {local_time(day, 8) for day in (*range(15, 31), 42, 60, 90)}
    return sorted(times)


def _clip(value: float, low: float, high: float) -> float:
    return min(max(value, low), high)


def vital_signs(rng: np.random.Generator, when: dt.datetime) -> dict[str, float]:
    """Vital signs at one instant; CRS windows are enforced by clipping."""
    t = days_since_infusion(when)
    values = {}
    for name, knots in VITAL_KNOTS.items():
        days, levels = zip(*knots)
        values[name] = float(np.interp(t, days, levels)) + rng.normal(0, VITAL_SD[name])
    values["temperature"] = (_clip(values["temperature"], 38.1, 40.0)
                             if within(when, FEVER)
                             else _clip(values["temperature"], 36.0, 37.7))
    values["systolic_bp"] = (_clip(values["systolic_bp"], 78, 88)
                             if within(when, HYPOTENSION)
                             else _clip(values["systolic_bp"], 92, 150))
    values["diastolic_bp"] = 0.6 * values["systolic_bp"] + rng.normal(0, 3.0)
    if within(when, HYPOXIA):
        values["spo2"] = _clip(values["spo2"], 90, 92)
    elif within(when, OXYGEN):
        values["spo2"] = _clip(values["spo2"], 93, 98)
    else:
        values["spo2"] = _clip(values["spo2"], 95, 99)
    return values


def add_vitals(entries: EntryList, rng: np.random.Generator) -> None:
    """Temperature, BP panel, heart rate, respiratory rate and SpO2."""
    units = {"heart_rate": "/min", "respiratory_rate": "/min", "spo2": "%"}
    for when in vital_times():
        key = stamp(when)
        values = vital_signs(rng, when)
        temperature = quantity(round(values["temperature"], 1), "Cel")
        entries.add(f"vital/temperature/{key}", observation(
            "temperature", when, temperature, "vital-signs"))
        entries.add(f"vital/bp/{key}", bp_panel(
            when, round(values["systolic_bp"]), round(values["diastolic_bp"])))
        for name, ucum in units.items():
            entries.add(f"vital/{name}/{key}", observation(
                name, when, quantity(round(values[name]), ucum), "vital-signs"))


# -- bundle --------------------------------------------------------------------
def build_bundle(seed: int = SEED) -> dict:
    """Build the demo Bundle as a JSON-ready dict (deterministic for a seed)."""
    rng = np.random.Generator(np.random.PCG64(seed))
    entries = EntryList()
    entries.add("patient", patient())
    entries.add("condition", condition())
    add_cell_therapy(entries)
    add_chemotherapy(entries)
    add_body_size(entries)
    add_labs(entries, rng)
    add_cart_levels(entries, rng)
    add_ice_scores(entries)
    add_vitals(entries, rng)
    return {
        "resourceType": "Bundle",
        "id": resource_uuid("bundle"),
        "meta": {"tag": SYNTHETIC_TAGS},
        "type": "collection",
        "timestamp": BUNDLE_TIMESTAMP,
        "entry": entries.entries,
    }


def render_bundle(bundle: dict) -> str:
    """JSON text with one entry per line (valid JSON, readable diffs)."""
    def dump(obj: object) -> str:
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))

    head = dump({k: v for k, v in bundle.items() if k != "entry"})
    body = ",\n".join(dump(entry) for entry in bundle["entry"])
    return head[:-1] + ',"entry":[\n' + body + "\n]}\n"


def main(argv: list[str] | None = None) -> int:
    """Write (or with ``--check`` compare) the demo bundle; return an exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUTPUT)
    parser.add_argument("--check", action="store_true",
                        help="only compare with the existing file")
    args = parser.parse_args(argv)
    text = render_bundle(build_bundle())
    if args.check:
        same = args.out.exists() and args.out.read_text(encoding="utf-8") == text
        print(f"{args.out}: {'up to date' if same else 'DIFFERS'}")
        return 0 if same else 1
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out} ({len(bundle_entries(text))} entries)")
    return 0


def bundle_entries(text: str) -> list:
    """Entries of a rendered bundle."""
    return json.loads(text)["entry"]


if __name__ == "__main__":
    raise SystemExit(main())
