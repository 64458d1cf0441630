"""Patients and instants for the scheduler tests (imported by the test modules)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools

from cartwin.record.model import PatientRecord

#: A fixed arrival instant, so that due times are exact.
T_ARRIVAL = dt.datetime(2025, 3, 12, 8, 0, tzinfo=dt.UTC)


def after(seconds: float) -> dt.datetime:
    """``seconds`` after :data:`T_ARRIVAL`."""
    return T_ARRIVAL + dt.timedelta(seconds=seconds)


@functools.lru_cache(maxsize=1)
def demo_record() -> PatientRecord:
    """The bundled synthetic demo patient (LBCL, axi-cel), read once."""
    from cartwin.demo import demo_bundle_path
    from cartwin.io.formats import ReadOptions, read_source
    from cartwin.record.pseudonym import DEMO_KEY

    parsed = read_source(
        demo_bundle_path(), "fhir", key=DEMO_KEY, options=ReadOptions()
    )
    (record,) = parsed.records
    return record


def clone(record: PatientRecord, index: int) -> PatientRecord:
    """``record`` under the pseudonym ``index`` written as 16 hex digits."""
    facts = dataclasses.replace(record.facts, pseudonym=f"{index:016x}")
    return dataclasses.replace(record, facts=facts)


def import_clone(store, index: int, record: PatientRecord | None = None) -> str:
    """Import clone ``index`` of the demo patient as its own file; its pseudonym."""
    patient = clone(record or demo_record(), index)
    store.import_records(
        [patient], source_name=f"clone-{index}.json", source_sha256=f"{index:064x}"
    )
    return patient.facts.pseudonym
