"""OMOP rows to observations, events and patient facts.

Rules
-----
* **Times.** A ``*_datetime`` value is used when present, else the
  ``*_date`` at 12:00 (noon, as the FHIR reader places dates, so that the
  calendar day survives any offset up to +-12 h). OMOP datetimes carry no
  zone: they are read as site local time at ``site_utc_offset_min`` and
  converted to UTC; that offset is kept as each item's source offset.
* **Measurements** (and ``observation`` rows of a mapped quantity): the value
  is ``value_as_number`` converted with
  :func:`cartwin.record.units.to_canonical`. The unit is the UCUM code of
  ``unit_concept_id`` when known (concept table or source vocabulary), else
  ``unit_source_value``. ``operator_concept_id`` ``<`` 4171756 and ``<=``
  4171754 give a value censored below, ``>`` 4172704 and ``>=`` 4171755 one
  censored above; ``=`` 4172703, 0 and NULL an exact value. A mapped row
  without ``value_as_number`` is skipped (counted with its reason); a
  ``value_as_number`` cell that is not a number is a problem.
* **Events**: ``drug_exposure``, ``procedure_occurrence``,
  ``condition_occurrence``, ``observation`` and ``episode`` rows whose concept
  (for episodes ``episode_object_concept_id``) maps to an event kind. Start
  and end follow the time rule; an end before the start is a problem. A drug
  exposure's dose is ``quantity`` in ``dose_unit_source_value`` when that
  unit is given (else no dose); a CAR T infusion dose must be in cells
  (``{cells}``, ``10*N{cells}``).
* **Diagnosis**: of the condition (or episode) rows naming LBCL, MM or B-ALL,
  the earliest; else the earliest naming another malignancy.
* **Facts**: the pseudonym is the keyed hash of ``person_source_value``, the
  hospital's own id, so that the same patient read from FHIR and from OMOP
  gets one pseudonym. When it is empty, ``person_id`` is only the id of this
  OMOP source, so the hashed id is ``omop:<kind>:<source name>:<person_id>``
  (kind ``duckdb``, ``csv`` or ``postgresql``; the file or folder name, or
  the URL without password and with ``#schema``): person 1 of one warehouse
  and person 1 of another never share a pseudonym (renaming the file changes
  these pseudonyms; fill ``person_source_value`` to avoid that). A
  ``person_id`` that appears twice with different content (sex, birth,
  source value) is the problem ``duplicate-person``; an identical repeat is
  skipped and counted. The age is in whole years at the local
  day of CAR T infusion (else of the person's last data point), from
  ``birth_datetime`` or ``year/month/day_of_birth``; a missing month or day is
  taken as 1 July (the age may then be one year off); an age outside 0-120
  years is a problem. Sex is ``male`` / ``female`` for gender concepts 8507 /
  8532, else ``None``.
* **Checks** (:mod:`cartwin.io._checks`): values outside the plausible range
  of their quantity, CAR T levels of exactly 0 (send the limit of
  quantification with ``operator_concept_id`` 4171756, ``<``), infusion doses
  outside 1e5-1e11 cells and times outside the years 1900-2199 are problems.
  Concept names kept as event names or diagnoses pass
  :func:`~cartwin.io._checks.clean_text`.

``source_code`` of every item is ``OMOP|<concept_id>``; ``source_id`` is
``<table>/<row id>``.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections import Counter
from dataclasses import dataclass, field

from cartwin.errors import UnitError
from cartwin.io._checks import (
    YEAR_RANGE,
    age_finding,
    clean_text,
    dose_finding,
    instant_finding,
    value_finding,
)
from cartwin.io.omop_report import Tally
from cartwin.io.omop_resolve import Resolver
from cartwin.io.omop_source import Fetched
from cartwin.io.problems import Problem, short_repr
from cartwin.record.model import Event, Observation, PatientFacts, PatientRecord
from cartwin.record.pseudonym import pseudonymise
from cartwin.record.units import canonical_unit, plausible_range, to_canonical
from cartwin.store.schema import GENDER_CONCEPTS, OPERATOR_CENSORING

#: Code system written in ``source_code`` for OMOP concept ids.
OMOP_SYSTEM = "OMOP"
#: Local time of day given to a ``*_date`` without ``*_datetime``.
DATE_ONLY_TIME = dt.time(12, 0)
_UTC = dt.timezone.utc
_SEX = {concept: sex for sex, concept in GENDER_CONCEPTS.items()}
#: Local years whose UTC instant is inside YEAR_RANGE under any offset (+-14 h).
_SAFE_YEARS = (YEAR_RANGE[0] + 1, YEAR_RANGE[1] - 1)
_CELL_UNIT = re.compile(r"^(?:10[*^](\d{1,2})\s*)?(?:\{cells?\}|cells?)?$")


@dataclass
class Candidate:
    """A condition or episode row naming a disease group."""

    group: str
    display: str
    source_code: str
    onset: dt.datetime
    order: int


@dataclass
class PersonData:
    """What the import collected for one person (mutable, private)."""

    person_id: int
    source_id: str
    sex: str | None
    birth: tuple[int, int | None, int | None] | None
    observations: list[Observation] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    diagnoses: list[Candidate] = field(default_factory=list)


class MapContext:
    """State of one import: persons, problems and counters."""

    def __init__(
        self,
        source_name: str,
        site_utc_offset_min: int,
        resolver: Resolver,
        *,
        source_kind: str = "",
    ) -> None:
        self.source_name = source_name
        self.source_kind = source_kind
        self.offset_min = site_utc_offset_min
        self.offset = dt.timedelta(minutes=site_utc_offset_min)
        self.resolver = resolver
        self.problems: list[Problem] = []
        self.tally = Tally()
        self.persons: dict[int, PersonData] = {}

    def problem(
        self, code: str, where: str, column: str, value: object, message: str
    ) -> None:
        """Record one problem of row ``where`` (``table/id``)."""
        shown = "" if value is None else short_repr(value)
        self.problems.append(
            Problem(
                code,
                self.source_name,
                message,
                resource=where,
                field=column,
                value=shown,
            )
        )

    def local_to_utc(self, value) -> dt.datetime | None:
        """UTC instant of a zone-less site-local date or datetime.

        Raises
        ------
        OutOfRange
            When the value lies outside the accepted years (see
            :data:`cartwin.io._checks.YEAR_RANGE`).
        """
        if value is None:
            return None
        if not isinstance(value, dt.datetime):
            value = dt.datetime.combine(value, DATE_ONLY_TIME)
        if not YEAR_RANGE[0] <= value.year <= YEAR_RANGE[1]:
            raise OutOfRange(instant_finding(value).message)
        when = (value - self.offset).replace(tzinfo=_UTC)
        finding = instant_finding(when)
        if finding is not None:
            raise OutOfRange(finding.message)
        return when

    def person_source_id(self, person_id: int) -> str:
        """The hashed id of a person without ``person_source_value``."""
        name = self.source_name
        if self.source_kind in ("duckdb", "csv"):
            name = name.replace("\\", "/").rstrip("/").rpartition("/")[2]
        return f"omop:{self.source_kind}:{name}:{person_id}"


class OutOfRange(ValueError):
    """A date or datetime outside the accepted years; ``args[0]`` says why."""


class Skip(Exception):
    """A row is not used; ``args[0]`` is the reason counted in the report."""


# -- person ----------------------------------------------------------------------
def map_persons(ctx: MapContext, fetched: Fetched) -> None:
    """Register every person row; a ``person_id`` given twice must agree."""
    col = fetched.index()
    ctx.tally.read["person"] += len(fetched.rows)
    for row in fetched.rows:
        pid = row[col["person_id"]]
        if pid is None:
            ctx.problem("missing-value", "person/?", "person_id", None, "is empty")
            continue
        source_value = clean_text(row[col["person_source_value"]])
        person = PersonData(
            person_id=pid,
            source_id=source_value or ctx.person_source_id(pid),
            sex=_SEX.get(row[col["gender_concept_id"]]),
            birth=_birth(row, col),
        )
        earlier = ctx.persons.get(pid)
        if earlier is None:
            ctx.persons[pid] = person
            ctx.tally.used["person"] += 1
        elif _facts_of(earlier) == _facts_of(person):
            ctx.tally.skips["person"]["repeated row"] += 1
        else:
            ctx.problem(
                "duplicate-person",
                f"person/{pid}",
                "person_id",
                pid,
                "appears in two rows that disagree (sex, birth or "
                "person_source_value); keep one row per person",
            )


def _facts_of(person: PersonData) -> tuple:
    return person.source_id, person.sex, person.birth


def _birth(row: tuple, col: dict[str, int]):
    stamp = row[col["birth_datetime"]]
    if stamp is not None:
        return stamp.year, stamp.month, stamp.day
    year = row[col["year_of_birth"]]
    if year is None:
        return None
    return year, row[col["month_of_birth"]], row[col["day_of_birth"]]


# -- measurement and observation -------------------------------------------------
@dataclass(frozen=True)
class ValueColumns:
    """Positions of the columns a quantity row is read from."""

    table: str
    key: int
    person: int
    concept: int
    datetime: int
    date: int
    value: int
    value_text: int
    unit_concept: int
    unit_source: int
    operator: int | None
    names: tuple[str, ...]

    @classmethod
    def of(cls, fetched: Fetched) -> ValueColumns:
        c, t = fetched.index(), fetched.spec.table
        return cls(
            table=t,
            key=c[fetched.spec.key],
            person=c["person_id"],
            concept=c[f"{t}_concept_id"],
            datetime=c[f"{t}_datetime"],
            date=c[f"{t}_date"],
            value=c["value_as_number"],
            value_text=c["value_as_number__text"],
            unit_concept=c["unit_concept_id"],
            unit_source=c["unit_source_value"],
            operator=c.get("operator_concept_id"),
            names=fetched.names,
        )


def map_quantities(ctx: MapContext, fetched: Fetched) -> None:
    """Map ``measurement`` (or ``observation``) rows of mapped concepts."""
    cols = ValueColumns.of(fetched)
    table = cols.table
    _count_concepts(ctx, fetched, cols.concept)
    targets = {
        cid: (
            t,
            canonical_unit(t.target) if t.target_type == "observation" else "",
            f"{OMOP_SYSTEM}|{cid}",
            plausible_range(t.target) if t.target_type == "observation" else None,
        )
        for cid, t in _accepted(ctx, fetched, cols.concept).items()
    }
    skipped: Counter[str] = Counter()
    units: dict[tuple, tuple[str, str]] = {}
    for row in fetched.rows:
        found = targets.get(row[cols.concept])
        if found is None:
            skipped["concept not recognised"] += 1
            continue
        try:
            if found[0].target_type == "event":
                _observation_event(ctx, row, cols, found[0])
            else:
                _quantity(ctx, row, cols, found, units)
            ctx.tally.used[table] += 1
        except Skip as skip:
            skipped[skip.args[0]] += 1
    _merge_skips(ctx, table, skipped)


def _quantity(ctx: MapContext, row: tuple, cols: ValueColumns, found, units) -> None:
    # This runs once per measurement row (10^6 in the benchmark): the common
    # path is inlined, each rare case goes to a helper that records why.
    target, canonical, source_code, (low, high) = found
    where = f"{cols.table}/{row[cols.key]}"
    person = ctx.persons.get(row[cols.person]) or _person(ctx, row[cols.person], where)
    value = row[cols.value]
    if value is None or row[cols.value_text] is not None or not math.isfinite(value):
        value = _number(ctx, row, cols.value, cols.value_text, where, "value_as_number")
        if value is None:
            raise Skip("no value_as_number")
    unit, unit_column = units.get((row[cols.unit_concept], row[cols.unit_source])) or (
        _unit(ctx, row, cols, units)
    )
    operator = None if cols.operator is None else row[cols.operator]
    censored = _censoring(operator) if operator else None
    try:
        converted = to_canonical(value, unit, target.target)
    except UnitError as exc:
        message = _unit_message(exc, unit, target.target)
        ctx.problem("unit", where, unit_column, unit, message)
        raise Skip("problem") from None
    if converted == 0 or not low <= converted <= high:
        _check_value(ctx, target.target, (converted, censored), where, value)
    local = row[cols.datetime]
    column = cols.datetime
    if local is None:
        local, column = _required_date(ctx, row, cols, where), cols.date
    if _SAFE_YEARS[0] <= local.year <= _SAFE_YEARS[1]:
        when = (local - ctx.offset).replace(tzinfo=_UTC)
    else:
        when = _utc(ctx, local, where, cols.names[column])
    person.observations.append(
        Observation(
            quantity=target.target,
            time=when,
            value=converted,
            unit=canonical,
            censored=censored,
            source_code=source_code,
            source_value=value,
            source_unit=unit,
            source_id=where,
            source_utc_offset_min=ctx.offset_min,
        )
    )


def _check_value(ctx: MapContext, quantity: str, value, where: str, shown) -> None:
    finding = value_finding(quantity, *value)
    if finding is not None:
        ctx.problem(finding.code, where, "value_as_number", shown, finding.message)
        raise Skip("problem")


def _utc(ctx: MapContext, local, where: str, column: str) -> dt.datetime:
    """UTC instant of a site-local value; a problem outside the accepted years."""
    try:
        return ctx.local_to_utc(local)
    except OutOfRange as exc:
        shown = local.isoformat(sep=" ") if hasattr(local, "isoformat") else local
        ctx.problem("timestamp-invalid", where, column, shown, exc.args[0])
        raise Skip("problem") from None


def _required_date(ctx: MapContext, row: tuple, cols: ValueColumns, where: str):
    day = row[cols.date]
    if day is None:
        ctx.problem(
            "missing-time",
            where,
            f"{cols.names[cols.date]} / {cols.names[cols.datetime]}",
            None,
            "both are empty",
        )
        raise Skip("problem")
    return dt.datetime.combine(day, DATE_ONLY_TIME)


def _observation_event(ctx: MapContext, row: tuple, cols: ValueColumns, target) -> None:
    where = f"{cols.table}/{row[cols.key]}"
    person = _person(ctx, row[cols.person], where)
    start = _required_time(ctx, row, cols.datetime, cols.date, where, cols.names)
    person.events.append(_event(ctx, target, start, None, where, row[cols.concept]))


def _number(
    ctx: MapContext, row, index: int, text_index: int, where: str, column: str
) -> float | None:
    text = row[text_index]
    if text is not None:
        ctx.problem("non-numeric", where, column, text, "is not a number")
        raise Skip("problem")
    value = row[index]
    if value is not None and not math.isfinite(value):
        ctx.problem("non-finite", where, column, value, "is not a finite number")
        raise Skip("problem")
    return value


def _unit(ctx: MapContext, row: tuple, cols: ValueColumns, cache: dict):
    key = (row[cols.unit_concept], row[cols.unit_source])
    found = cache.get(key)
    if found is None:
        code = ctx.resolver.unit(key[0])
        if code is not None:
            found = (clean_text(code), "unit_concept_id")
        else:
            found = (clean_text(key[1]), "unit_source_value")
        cache[key] = found
    return found


def _unit_message(exc: UnitError, unit: str, quantity: str) -> str:
    if unit:
        return str(exc)
    return (
        f"no unit (unit_concept_id unknown, unit_source_value empty); {quantity} "
        f"needs a unit convertible to {canonical_unit(quantity)!r}"
    )


def _censoring(operator: int) -> str | None:
    if operator not in OPERATOR_CENSORING:
        raise Skip(f"operator_concept_id {operator}")
    return OPERATOR_CENSORING[operator]


# -- events -----------------------------------------------------------------------
@dataclass(frozen=True)
class EventColumns:
    """Names of the columns an event table is read from."""

    concept: str
    start_datetime: str
    start_date: str
    end_datetime: str | None = None
    end_date: str | None = None
    dose: str | None = None
    dose_unit: str | None = None
    source_concept: str | None = None


#: Event columns of each event table.
EVENT_COLUMNS = {
    "drug_exposure": EventColumns(
        "drug_concept_id",
        "drug_exposure_start_datetime",
        "drug_exposure_start_date",
        "drug_exposure_end_datetime",
        "drug_exposure_end_date",
        "quantity",
        "dose_unit_source_value",
    ),
    "procedure_occurrence": EventColumns(
        "procedure_concept_id",
        "procedure_datetime",
        "procedure_date",
        "procedure_end_datetime",
        "procedure_end_date",
    ),
    "condition_occurrence": EventColumns(
        "condition_concept_id",
        "condition_start_datetime",
        "condition_start_date",
        "condition_end_datetime",
        "condition_end_date",
        source_concept="condition_source_concept_id",
    ),
    "episode": EventColumns(
        "episode_object_concept_id",
        "episode_start_datetime",
        "episode_start_date",
        "episode_end_datetime",
        "episode_end_date",
    ),
}


def map_events(ctx: MapContext, fetched: Fetched) -> None:
    """Map rows of an event table (see :data:`EVENT_COLUMNS`)."""
    table, col = fetched.spec.table, fetched.index()
    spec = EVENT_COLUMNS[table]
    concept = col[spec.concept]
    _count_concepts(ctx, fetched, concept)
    targets = _accepted(ctx, fetched, concept)
    skipped: Counter[str] = Counter()
    for order, row in enumerate(fetched.rows):
        try:
            _event_row(ctx, fetched, col, row, targets.get(row[concept]), order)
            ctx.tally.used[table] += 1
        except Skip as skip:
            skipped[skip.args[0]] += 1
    _merge_skips(ctx, table, skipped)


def _event_row(
    ctx: MapContext, fetched: Fetched, col: dict, row: tuple, target, order: int
) -> None:
    table = fetched.spec.table
    spec = EVENT_COLUMNS[table]
    group = None
    if target is None and spec.source_concept is not None:
        group = ctx.resolver.disease(
            (row[col[spec.concept]], row[col[spec.source_concept]])
        )
    if target is None and group is None:
        raise Skip("concept not recognised")
    where = f"{table}/{row[col[fetched.spec.key]]}"
    person = _person(ctx, row[col["person_id"]], where)
    start, end = _span(ctx, row, col, spec, where, fetched.names)
    concept_id = row[col[spec.concept]]
    if target is not None and target.target_type == "diagnosis":
        group = (target.target, target.name)
    if group is not None:
        person.diagnoses.append(
            Candidate(
                group[0],
                clean_text(group[1]),
                f"{OMOP_SYSTEM}|{concept_id}",
                start,
                order,
            )
        )
        return
    dose, dose_unit = _dose(ctx, row, col, spec, target, where)
    person.events.append(
        _event(
            ctx, target, start, end, where, concept_id, dose=dose, dose_unit=dose_unit
        )
    )


def _span(ctx: MapContext, row, col, spec: EventColumns, where: str, names):
    start = _required_time(
        ctx, row, col[spec.start_datetime], col[spec.start_date], where, names
    )
    end = None
    if spec.end_datetime is not None:
        local = _first(row[col[spec.end_datetime]], row[col[spec.end_date]])
        end = _utc(ctx, local, where, f"{spec.end_date} / {spec.end_datetime}")
    if end is not None and end < start:
        ctx.problem(
            "dates-out-of-order",
            where,
            f"{spec.end_date} / {spec.end_datetime}",
            None,
            f"end {_local(ctx, end)} is before start {_local(ctx, start)} "
            f"({spec.start_date} / {spec.start_datetime}; site local time, a date "
            "alone read as 12:00)",
        )
        raise Skip("problem")
    return start, end


def _dose(ctx: MapContext, row, col, spec: EventColumns, target, where: str):
    if spec.dose is None:
        return None, ""
    amount = _number(
        ctx, row, col[spec.dose], col[f"{spec.dose}__text"], where, spec.dose
    )
    unit = (row[col[spec.dose_unit]] or "").strip()
    if amount is None or not unit:
        return None, ""
    if target.kind != "infusion":
        return float(amount), clean_text(unit)
    match = _CELL_UNIT.match(unit)
    if match is None:
        ctx.problem(
            "unit",
            where,
            spec.dose_unit,
            unit,
            "a CAR T dose must be a number of cells: UCUM {cells} or 10*N{cells}",
        )
        raise Skip("problem")
    scale = 10 ** int(match.group(1)) if match.group(1) else 1
    cells = float(amount) * scale
    finding = dose_finding(cells)
    if finding is not None:
        ctx.problem(finding.code, where, spec.dose, amount, finding.message)
        raise Skip("problem")
    return cells, "{cells}"


def _event(
    ctx: MapContext, target, start, end, where: str, concept_id: int, **extra
) -> Event:
    return Event(
        kind=target.kind,
        start=start,
        end=end,
        name=clean_text(target.name),
        detail=target.detail,
        source_code=f"{OMOP_SYSTEM}|{concept_id}",
        source_id=where,
        source_utc_offset_min=ctx.offset_min,
        **extra,
    )


# -- shared helpers ---------------------------------------------------------------
def _count_concepts(ctx: MapContext, fetched: Fetched, index: int) -> None:
    table = fetched.spec.table
    ctx.tally.read[table] += len(fetched.rows)
    counts = Counter(row[index] for row in fetched.rows)
    for concept_id, n in counts.items():
        ctx.tally.concepts[(table, concept_id or 0)] += n


def _accepted(ctx: MapContext, fetched: Fetched, index: int) -> dict:
    table = fetched.spec.table
    ids = {row[index] for row in fetched.rows}
    found = {cid: ctx.resolver.target(cid, table) for cid in ids}
    return {cid: target for cid, target in found.items() if target is not None}


def _merge_skips(ctx: MapContext, table: str, skipped: Counter) -> None:
    for reason, n in skipped.items():
        ctx.tally.skips[table][reason] += n


def _person(ctx: MapContext, person_id, where: str) -> PersonData:
    person = ctx.persons.get(person_id)
    if person is None:
        ctx.problem(
            "unknown-person",
            where,
            "person_id",
            person_id,
            "is not a person_id of the person table",
        )
        raise Skip("problem")
    return person


def _required_time(
    ctx: MapContext, row, i_datetime: int, i_date: int, where: str, names
) -> dt.datetime:
    local = _first(row[i_datetime], row[i_date])
    when = _utc(ctx, local, where, f"{names[i_date]} / {names[i_datetime]}")
    if when is None:
        ctx.problem(
            "missing-time",
            where,
            f"{names[i_date]} / {names[i_datetime]}",
            None,
            "both are empty",
        )
        raise Skip("problem")
    return when


def _first(*values):
    for value in values:
        if value is not None:
            return value
    return None


def _local(ctx: MapContext, when: dt.datetime) -> str:
    return (when + ctx.offset).replace(tzinfo=None).isoformat(sep=" ")


# -- records ----------------------------------------------------------------------
def build_records(ctx: MapContext, key: bytes) -> tuple[PatientRecord, ...]:
    """One record per person, in ``person_id`` order."""
    return tuple(_record(ctx, ctx.persons[pid], key) for pid in sorted(ctx.persons))


def _record(ctx: MapContext, person: PersonData, key: bytes) -> PatientRecord:
    infusions = [e for e in person.events if e.kind == "infusion"]
    infusion = min(infusions, key=lambda e: e.start) if infusions else None
    diagnosis = _primary_diagnosis(person.diagnoses)
    facts = PatientFacts(
        pseudonym=pseudonymise(person.source_id, key),
        age_years=_age(ctx, person, infusion),
        sex=person.sex,
        diagnosis=diagnosis.display if diagnosis else None,
        diagnosis_code=diagnosis.source_code if diagnosis else None,
        disease=diagnosis.group if diagnosis else None,
        product=infusion.name if infusion else None,
    )
    return PatientRecord(
        facts=facts,
        observations=tuple(person.observations),
        events=tuple(person.events),
        site_utc_offset_min=ctx.offset_min,
    )


def _primary_diagnosis(candidates: list[Candidate]) -> Candidate | None:
    if not candidates:
        return None
    return min(candidates, key=lambda d: (d.group == "other", d.onset, d.order))


def _age(ctx: MapContext, person: PersonData, infusion: Event | None) -> int | None:
    if person.birth is None:
        return None
    if infusion is not None:
        reference = infusion.start
    else:
        times = [o.time for o in person.observations] + [e.start for e in person.events]
        if not times:
            return None
        reference = max(times)
    day = (reference + ctx.offset).date()
    year, month, mday = person.birth
    month, mday = (month, mday) if month and mday else (7, 1)
    years = day.year - year - ((day.month, day.day) < (month, mday))
    if years < 0:
        return None
    finding = age_finding(years)
    if finding is not None:
        ctx.problem(finding.code, f"person/{person.person_id}",
                    "year_of_birth / birth_datetime", year,
                    f"{finding.message} (on {day.isoformat()})")  # fmt: skip
        return None
    return years
