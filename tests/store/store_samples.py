"""A synthetic patient for the store tests (imported by the test modules)."""

from __future__ import annotations

import datetime as dt
import hashlib

from cartwin.record.model import Event, Observation, PatientFacts, PatientRecord
from cartwin.record.pseudonym import pseudonymise

#: Pseudonymisation key of these tests only.
KEY = b"store-test-key"
UTC = dt.timezone.utc
#: Infusion instant of the synthetic patient (10:00 at the site, UTC+01:00).
T0 = dt.datetime(2025, 3, 10, 9, 0, tzinfo=UTC)


def at(days: float, hours: float = 0.0) -> dt.datetime:
    """Instant ``days`` and ``hours`` after infusion."""
    return T0 + dt.timedelta(days=days, hours=hours)


def sha(text: str) -> str:
    """SHA-256 hex digest standing in for a source file's hash."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def pseudonym(source_id: str = "MRN-0001") -> str:
    return pseudonymise(source_id, KEY)


def observations() -> list[Observation]:
    """Exact, censored (both sides), offset and non-ASCII observations."""
    loinc = "http://loinc.org|"
    return [
        Observation("crp", at(-1), 12.5, "mg/L", source_code=loinc + "1988-5",
                    source_value=1.25, source_unit="mg/dL",
                    source_id="Observation/crp-1", source_utc_offset_min=60),
        Observation("crp", at(1), 95.0, "mg/L", source_value=95.0,
                    source_unit="mg/L", source_id="Observation/crp-2"),
        Observation("cart_qpcr", at(7), 10.0, "{copies}/ug", censored="below",
                    source_id="Observation/qpcr-7"),
        Observation("ferritin", at(2), 100000.0, "ng/mL", censored="above",
                    source_value=100000.0, source_unit="ug/L",
                    source_id="Observation/ferritin-2"),
        Observation("anc", at(3) + dt.timedelta(microseconds=1), 0.12, "10*9/L",
                    source_id="Observation/anc-3", source_utc_offset_min=-300),
        Observation("creatinine", at(4), 1.0, "mg/dL", source_value=88.4,
                    source_unit="µmol/L", source_id="Observation/crea-4",
                    source_utc_offset_min=330),
    ]  # fmt: skip


def events() -> list[Event]:
    """One event of each table, open ends, and two events at one instant."""
    return [
        Event("leukapheresis", at(-30), at(-30, 4), source_id="Procedure/lk"),
        Event("bridging", at(-20), at(-15), name="involved-site radiotherapy",
              detail="radiotherapy", source_id="Procedure/rt"),
        Event("bridging", at(-21), name="polatuzumab vedotin", dose=1.8,
              dose_unit="mg/kg", source_id="MedicationAdministration/pola"),
        Event("lymphodepletion", at(-5), name="fludarabine", dose=30.0,
              dose_unit="mg/m2", source_id="MedicationAdministration/flu"),
        Event("lymphodepletion", at(-5), name="cyclophosphamide", dose=500.0,
              dose_unit="mg/m2", source_id="MedicationAdministration/cy"),
        Event("infusion", T0, name="axicabtagene ciloleucel", dose=2.0e8,
              dose_unit="{cells}", source_code="http://www.nlm.nih.gov/research/"
              "umls/rxnorm|1985600", source_id="Procedure/inf",
              source_utc_offset_min=60),
        Event("tocilizumab", at(2), name="tocilizumab", dose=8.0, dose_unit="mg/kg"),
        Event("oxygen", at(2), at(3), dose=2.0, dose_unit="L/min",
              detail="low_flow"),
        Event("icu", at(3), source_id="Encounter/icu"),
        Event("seizure", at(4), source_id="Condition/sz"),
        Event("consciousness", at(4), detail="awakens to voice"),
        Event("corticosteroid", at(4), at(6), name="dexamethasone", dose=10.0,
              dose_unit="mg", source_utc_offset_min=-420),
    ]  # fmt: skip


def sample_record(source_id: str = "MRN-0001", **facts) -> PatientRecord:
    """The full synthetic record of one patient; ``facts`` override defaults."""
    defaults = dict(
        age_years=61, sex="female", diagnosis="Diffuse large B-cell lymphoma",
        diagnosis_code="http://snomed.info/sct|1230035003", disease="LBCL",
        product="axicabtagene ciloleucel",
    )  # fmt: skip
    defaults.update(facts)
    return PatientRecord(
        PatientFacts(pseudonym(source_id), **defaults),
        tuple(observations()),
        tuple(events()),
        site_utc_offset_min=60,
    )
