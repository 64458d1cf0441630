"""Conversion between patient records and the store's columns.

Records are turned into one NumPy array per column, which DuckDB scans in bulk
(no row-by-row inserts); rows read back are turned into the same frozen
dataclasses. Empty strings are written as SQL NULL and read back as ``""``;
times travel as integer microseconds since the Unix epoch (UTC).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from typing import Iterable, Sequence

import numpy as np

from cartwin.errors import DataError
from cartwin.record.model import Event, Observation, PatientFacts, PatientRecord
from cartwin.record.pseudonym import looks_like_pseudonym
from cartwin.store.schema import (
    CENSORED_OPERATORS,
    GENDER_CONCEPTS,
    OPERATOR_CENSORING,
    event_table,
)

UTC = dt.timezone.utc
EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = dt.timedelta(microseconds=1)
_OPERATOR_TEXT = {"below": "<", "above": ">", None: ""}
#: The default ``source_value`` NaN object of :class:`Observation`. NaN is not
#: equal to itself, so dataclass equality holds only for this very object.
_NAN_DEFAULT = next(
    f.default for f in dataclasses.fields(Observation) if f.name == "source_value"
)


def person_id(pseudonym: str) -> int:
    """OMOP ``person_id`` of a pseudonym: its 64 bits as a signed integer.

    The 16 hexadecimal digits are read as a big-endian two's-complement
    integer, so the mapping is one-to-one and fits a ``BIGINT``; ids may be
    negative.

    Raises
    ------
    DataError
        When ``pseudonym`` is not 16 lower-case hexadecimal digits, i.e. not
        made by :func:`cartwin.record.pseudonym.pseudonymise`. This keeps raw
        source ids (MRNs, FHIR ids) out of the store.

    Examples
    --------
    >>> person_id("0000000000000001"), person_id("ffffffffffffffff")
    (1, -1)
    """
    if not isinstance(pseudonym, str) or not looks_like_pseudonym(pseudonym):
        raise DataError(
            f"patient id {pseudonym!r} is not a pseudonym (16 lower-case hex "
            "digits); pseudonymise source ids with "
            "cartwin.record.pseudonym.pseudonymise before storing"
        )
    return int.from_bytes(bytes.fromhex(pseudonym), "big", signed=True)


def epoch_us(when: dt.datetime) -> int:
    """Microseconds since 1970-01-01T00:00Z of a timezone-aware instant."""
    return (when - EPOCH) // _ONE_US


def from_epoch_us(micros: int | None) -> dt.datetime | None:
    """Inverse of :func:`epoch_us`, UTC; ``None`` stays ``None``."""
    if micros is None:
        return None
    return EPOCH + dt.timedelta(microseconds=micros)


def _text(values: Iterable[str]) -> np.ndarray:
    return np.array([v or None for v in values], dtype=object)


def _times(micros: Sequence[int | None]) -> np.ndarray:
    ints = np.array([0 if m is None else m for m in micros], dtype=np.int64)
    times = ints.astype("datetime64[us]")
    times[[m is None for m in micros]] = np.datetime64("NaT")
    return times


def person_columns(facts: Sequence[PatientFacts], offsets: Sequence) -> dict:
    """Columns of the ``person`` table for merged facts and site offsets."""
    return {
        "person_id": np.array([person_id(f.pseudonym) for f in facts], np.int64),
        "person_source_value": _text(f.pseudonym for f in facts),
        "gender_concept_id": np.array(
            [GENDER_CONCEPTS.get(f.sex or "", 0) for f in facts], np.int64
        ),
        "gender_source_value": np.array([f.sex for f in facts], object),
        "age_at_index": _optional_numbers(f.age_years for f in facts),
        "diagnosis_source_value": np.array([f.diagnosis_code for f in facts], object),
        "cartwin_diagnosis": np.array([f.diagnosis for f in facts], object),
        "disease": np.array([f.disease for f in facts], object),
        "product": np.array([f.product for f in facts], object),
        "site_utc_offset_min": _optional_numbers(offsets),
    }


def facts_from_row(row: Sequence) -> tuple[PatientFacts, int | None]:
    """Facts and site offset from a ``person`` row (see ``PERSON_COLUMNS``)."""
    pseudonym, sex, age, code, diagnosis, disease, product, offset = row
    facts = PatientFacts(
        pseudonym=pseudonym, age_years=age, sex=sex, diagnosis=diagnosis,
        diagnosis_code=code, disease=disease, product=product,
    )  # fmt: skip
    return facts, offset


#: ``person`` columns read by :func:`facts_from_row`, in order.
PERSON_COLUMNS = (
    "person_source_value, gender_source_value, age_at_index, "
    "diagnosis_source_value, cartwin_diagnosis, disease, product, "
    "site_utc_offset_min"
)


def _optional_numbers(values: Iterable) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def validate_observations(record: PatientRecord) -> None:
    """Check what the store cannot keep faithfully.

    Raises
    ------
    DataError
        For a value that is not finite (NaN would not read back equal) or a
        ``censored`` flag other than ``None``, ``"below"`` or ``"above"``.
    """
    for obs in record.observations:
        if not (isinstance(obs.value, (int, float)) and math.isfinite(obs.value)):
            raise DataError(
                f"patient {record.facts.pseudonym}: observation {obs.source_id!r} "
                f"of {obs.quantity} has value {obs.value!r}; a finite number is needed"
            )
        if obs.censored not in CENSORED_OPERATORS and obs.censored is not None:
            raise DataError(
                f"patient {record.facts.pseudonym}: observation {obs.source_id!r} "
                f"has censored={obs.censored!r}; allowed: None, 'below', 'above'"
            )


def validate_events(record: PatientRecord) -> None:
    """Check event ends (timezone-aware) and doses (``None`` or finite).

    Raises
    ------
    DataError
        Naming the patient, the event's source id, the field and the value.
    """
    for event in record.events:
        where = f"patient {record.facts.pseudonym}: event {event.source_id!r} "
        if event.end is not None and event.end.tzinfo is None:
            raise DataError(f"{where}has a naive end time {event.end.isoformat()}")
        if event.dose is not None and not math.isfinite(event.dose):
            raise DataError(f"{where}has dose {event.dose!r}; use None when unknown")


def measurement_columns(records: Sequence[PatientRecord]) -> dict:
    """Staging columns of all observations, ``seq`` giving the input order."""
    pairs = [(person_id(r.facts.pseudonym), o) for r in records for o in r.observations]
    observations = [o for _, o in pairs]
    operators = [CENSORED_OPERATORS.get(o.censored) for o in observations]
    return {
        "seq": np.arange(len(pairs), dtype=np.int64),
        "person_id": np.array([p for p, _ in pairs], dtype=np.int64),
        "quantity": np.array([o.quantity for o in observations], dtype=object),
        "t": _times([epoch_us(o.time) for o in observations]),
        "value": np.array([o.value for o in observations], dtype=float),
        "unit": np.array([o.unit for o in observations], dtype=object),
        "operator": _optional_numbers(operators),
        "source_code": _text(o.source_code for o in observations),
        "value_text": np.array([_value_text(o) for o in observations], object),
        "source_value": np.array([o.source_value for o in observations], float),
        "source_unit": _text(o.source_unit for o in observations),
        "source_id": _text(o.source_id for o in observations),
        "utc_offset": np.array(
            [o.source_utc_offset_min for o in observations], dtype=np.int64
        ),
    }


def _value_text(obs: Observation) -> str | None:
    if math.isnan(obs.source_value):
        return None
    text = f"{_OPERATOR_TEXT[obs.censored]}{obs.source_value:.15g} {obs.source_unit}"
    return text.strip()


def event_columns(records: Sequence[PatientRecord]) -> dict:
    """Staging columns of all events, with the OMOP table each one goes to."""
    pairs = [(person_id(r.facts.pseudonym), e) for r in records for e in r.events]
    events = [e for _, e in pairs]
    return {
        "seq": np.arange(len(pairs), dtype=np.int64),
        "person_id": np.array([p for p, _ in pairs], dtype=np.int64),
        "target": np.array(
            [event_table(e.kind, e.name, e.detail) for e in events], dtype=object
        ),
        "kind": np.array([e.kind for e in events], dtype=object),
        "t_start": _times([epoch_us(e.start) for e in events]),
        "t_end": _times([None if e.end is None else epoch_us(e.end) for e in events]),
        "name": _text(e.name for e in events),
        "dose": _optional_numbers(e.dose for e in events),
        "dose_unit": _text(e.dose_unit for e in events),
        "detail": _text(e.detail for e in events),
        "source_code": _text(e.source_code for e in events),
        "source_id": _text(e.source_id for e in events),
        "utc_offset": np.array(
            [e.source_utc_offset_min for e in events], dtype=np.int64
        ),
    }


def observation_from_row(row: Sequence) -> Observation:
    """Observation from a measurement row (see ``MEASUREMENT_COLUMNS``)."""
    quantity, micros, value, unit, operator, code, src_value, src_unit, sid, off = row
    return Observation(
        quantity=quantity,
        time=EPOCH + dt.timedelta(microseconds=micros),
        value=value,
        unit=unit,
        censored=OPERATOR_CENSORING.get(operator),
        source_code=code or "",
        source_value=_NAN_DEFAULT if src_value is None else src_value,
        source_unit=src_unit or "",
        source_id=sid or "",
        source_utc_offset_min=off,
    )


#: ``measurement`` columns read by :func:`observation_from_row`, in order.
MEASUREMENT_COLUMNS = (
    "cartwin_quantity, epoch_us(measurement_datetime), value_as_number, "
    "unit_source_value, operator_concept_id, measurement_source_value, "
    "cartwin_source_value, cartwin_source_unit, source_id, source_utc_offset_min"
)


def event_from_row(row: Sequence) -> Event:
    """Event from a row of ``EVENT_SELECT`` (after its id and table columns)."""
    kind, start, end, name, dose, dose_unit, detail, code, sid, off = row
    return Event(
        kind=kind,
        start=EPOCH + dt.timedelta(microseconds=start),
        end=from_epoch_us(end),
        name=name or "",
        dose=dose,
        dose_unit=dose_unit or "",
        detail=detail or "",
        source_code=code or "",
        source_id=sid or "",
        source_utc_offset_min=off,
    )
