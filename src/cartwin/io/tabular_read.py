"""Rows of a table to patient records, collecting every problem first.

The reader makes two passes over the data rows. The first finds the patients
and their per-patient cells (site offset, event dates, product); a value that
differs between two rows of one patient is a ``conflict``. The per-patient
facts are then read: site offset, events, and the calendar day of infusion
that day offsets count from. The second pass reads the values. Nothing is
returned unless the whole table reads without a problem.

Values pass the checks of :mod:`cartwin.io._checks` (plausible range, CAR T
zeros censored below the column's ``lloq`` or refused, infusion doses of
1e5-1e11 cells). Free text kept (event names) passes
:func:`~cartwin.io._checks.clean_text`.

Source ids are content-based, not cell coordinates:
``tabular:<quantity>:<name>@<UTC instant>``, where the name is the
``[columns.NAME]`` of the value (the value column's header in the wide
layout, the quantity cell in the long layout) and the patient is the
record's. A cumulative re-export with rows added or reordered therefore
gives the same ids for the same measurements, and the store recognises them
as already imported.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass, field

from cartwin.errors import UnitError
from cartwin.io._checks import clean_text, dose_finding, undetected, value_finding
from cartwin.io.tabular_cells import (
    CENSORED_WORDS,
    CellError,
    cell_text,
    parse_day,
    parse_instant,
    parse_number,
    place_date,
)
from cartwin.io.tabular_grid import Grid
from cartwin.io.tabular_layout import Column, Layout, LongLayout, ValueSlot, WideLayout
from cartwin.io.tabular_mapping import (
    CELL_UNIT,
    MAX_UTC_OFFSET_MIN,
    EventMap,
    TabularMapping,
)
from cartwin.io.tabular_problems import CellProblem, raise_problems, short_repr
from cartwin.record.model import Event, Observation, PatientFacts, PatientRecord
from cartwin.record.pseudonym import looks_like_pseudonym, pseudonymise
from cartwin.record.units import canonical_unit, to_canonical

_HIDDEN = object()
#: Marks an optional part that is absent (a problem is marked by ``None``).
_ABSENT = ()
#: Marks a censoring cell with a problem (``None`` means exact).
_BAD = object()


@dataclass
class PatientData:
    """What the reader gathered for one patient (mutable, private)."""

    source_id: str
    first_row: int
    cells: dict[tuple, tuple[int, Column, object]] = field(default_factory=dict)
    offset: int | None = None
    events: list[Event] = field(default_factory=list)
    day_zero: dt.date | None = None
    day_zero_offset: int | None = None
    observations: list[Observation] = field(default_factory=list)


@dataclass(frozen=True)
class TableContents:
    """Result of :func:`read_table`.

    Attributes
    ----------
    records : tuple[PatientRecord, ...]
        One record per patient, in order of first appearance.
    n_rows : int
        Data rows read (blank rows included).
    skipped : tuple[tuple[str, int], ...]
        Cells or rows left out on purpose, with reasons and counts.
    ignored_columns : tuple[str, ...]
        Headers the mapping does not read.
    source_ids : tuple[str, ...]
        Patient ids as written in the file; for redacting the file name only.
    """

    records: tuple[PatientRecord, ...]
    n_rows: int
    skipped: tuple[tuple[str, int], ...]
    ignored_columns: tuple[str, ...]
    source_ids: tuple[str, ...]


def read_table(grid: Grid, mapping: TabularMapping, key: bytes) -> TableContents:
    """Read every patient of ``grid`` as ``mapping`` describes it.

    Raises
    ------
    TabularImportError
        Listing every problem of the table (nothing is returned then).
    """
    return _TableReader(grid, mapping).read(key)


class _TableReader:
    def __init__(self, grid: Grid, mapping: TabularMapping) -> None:
        self.grid, self.mapping = grid, mapping
        self.problems: list[CellProblem] = []
        self.skipped: Counter[str] = Counter()
        self.patients: dict[str, PatientData] = {}
        self.no_infusion: set[str] = set()

    # -- reporting ----------------------------------------------------------
    def problem(self, code: str, row: int | None, column: Column | None,
                value: object, message: str) -> None:
        hidden = value is _HIDDEN
        header = column.label if column else ("" if hidden else str(value))
        self.problems.append(CellProblem(
            code, self.grid.source, message, self.grid.sheet, row,
            column.letter if column else "", header,
            "" if hidden else short_repr(value)))

    def skip(self, reason: str) -> None:
        self.skipped[reason] += 1

    # -- the whole table ----------------------------------------------------
    def read(self, key: bytes) -> TableContents:
        layout, roles, rows = self._layout()
        for number, cells in rows:
            self._first_pass(number, cells, roles)
        for patient in self.patients.values():
            self._patient_facts(patient)
        for number, cells in rows:
            self._second_pass(number, cells, roles[("id",)], layout)
        raise_problems(self.problems)
        return TableContents(
            records=tuple(self._record(p, key) for p in self.patients.values()),
            n_rows=len(rows),
            skipped=tuple(sorted(self.skipped.items())),
            ignored_columns=layout.ignored(),
            source_ids=tuple(self.patients),
        )

    def _layout(self) -> tuple[Layout, dict, tuple]:
        first, count = self.mapping.skip_rows, self.mapping.header_rows
        rows = self.grid.rows
        if len(rows) < first + count:
            self.problem("no-header", len(rows) or None, None, _HIDDEN,
                         f"has {len(rows)} row(s); the mapping expects {first} "
                         f"row(s) to skip and {count} header row(s)")
            raise_problems(self.problems)
        header = list(rows[first:first + count])
        if self.mapping.layout == "long":
            layout: Layout = LongLayout(self.mapping, header[0][1], header[0][0], self)
        else:
            layout = WideLayout(self.mapping, header, self)
        roles = layout.fixed_roles()
        raise_problems(self.problems)
        return layout, roles, rows[first + count:]

    # -- first pass: patients and per-patient cells -------------------------
    def _first_pass(self, number: int, cells: tuple, roles: dict) -> None:
        if all(cell is None for cell in cells):
            self.skip("blank row")
            return
        patient = self._patient(number, cells, roles[("id",)], create=True)
        if patient is None:
            return
        for role, column in roles.items():
            if role != ("id",):
                self._note(patient, role, column, number, _cell(cells, column.index))

    def _patient(self, number: int, cells: tuple, column: Column,
                 create: bool = False) -> PatientData | None:
        text = cell_text(_cell(cells, column.index))
        if text is None:
            if create:
                self.problem("missing-id", number, column, "",
                             "the patient id is blank in a row that holds data")
            return None
        if self.mapping.id_kind == "pseudonym" and not looks_like_pseudonym(text):
            if create:
                self.problem("not-pseudonym", number, column, _HIDDEN,
                             "id_kind = 'pseudonym' but this id is not 16 "
                             "lower-case hex digits (the id is not shown)")
            return None
        if create and text not in self.patients:
            self.patients[text] = PatientData(text, number)
        return self.patients.get(text)

    def _note(self, patient: PatientData, role: tuple, column: Column,
              number: int, value: object) -> None:
        if value is None:
            return
        earlier = patient.cells.get(role)
        if earlier is None:
            patient.cells[role] = (number, column, value)
        elif _comparable(earlier[2]) != _comparable(value):
            self.problem("conflict", number, column, value,
                         f"differs from {short_repr(earlier[2])} in row "
                         f"{earlier[0]} for the same patient")

    # -- per-patient facts --------------------------------------------------
    def _patient_facts(self, patient: PatientData) -> None:
        patient.offset = self._offset(patient)
        for event_map in self.mapping.events:
            self._event(patient, event_map)
        infusions = [e for e in patient.events if e.kind == "infusion"]
        if infusions:
            infusion = min(infusions, key=lambda e: e.start)
            site = infusion.source_utc_offset_min if patient.offset is None \
                else patient.offset
            patient.day_zero = (infusion.start + dt.timedelta(minutes=site)).date()
            patient.day_zero_offset = site

    def _offset(self, patient: PatientData) -> int | None:
        cell = patient.cells.get(("offset",))
        if cell is None:
            return self.mapping.time.utc_offset_min
        number, column, value = cell
        try:
            minutes, censored = parse_number(value)
        except CellError:
            minutes, censored = float("nan"), None
        if censored or not minutes.is_integer() or abs(minutes) > MAX_UTC_OFFSET_MIN:
            self.problem("non-numeric", number, column, value,
                         "is not a UTC offset in whole minutes (-840 to 840)")
            return None
        return int(minutes)

    def _event(self, patient: PatientData, event_map: EventMap) -> None:
        cells = {f: patient.cells.get(("event", event_map.kind, f))
                 for f in ("start_column", "end_column", "name_column", "dose_column")}
        if cells["start_column"] is None:
            given = [c for c in cells.values() if c is not None]
            if given:
                row, column, value = given[0]
                self.problem("missing-value", row, column, value,
                             f"the {event_map.kind} has no start date in column "
                             f"{event_map.start_column!r} for this patient")
            return
        start = self._instant(patient, cells["start_column"])
        end = self._instant(patient, cells["end_column"]) if cells["end_column"] \
            else _ABSENT
        dose = self._dose(event_map, cells["dose_column"]) if cells["dose_column"] \
            else _ABSENT
        if start is None or end is None or dose is None:
            return
        if end and end[0] < start[0]:
            row, column, value = cells["end_column"]
            self.problem("date-order", row, column, value,
                         f"the {event_map.kind} ends before it starts")
            return
        name = cell_text(cells["name_column"][2]) if cells["name_column"] else None
        patient.events.append(Event(
            kind=event_map.kind, start=start[0], end=end[0] if end else None,
            name=clean_text(name or event_map.name), dose=dose[0] if dose else None,
            dose_unit=dose[1] if dose else "",
            source_code=f"tabular|{event_map.start_column}",
            source_id=f"tabular:{event_map.kind}", source_utc_offset_min=start[1],
        ))  # fmt: skip

    def _instant(self, patient: PatientData, cell: tuple):
        """``(UTC instant, offset)`` of a date cell, ``None`` after a problem."""
        row, column, value = cell
        time = self.mapping.time
        try:
            return parse_instant(value, patient.offset, date_format=time.date_format,
                                 default_time=time.default_time)
        except CellError as exc:
            self.problem(exc.code, row, column, value, str(exc))
            return None

    def _dose(self, event_map: EventMap, cell: tuple):
        """``(dose, unit)``, ``None`` after a problem."""
        row, column, value = cell
        try:
            dose, censored = parse_number(value, self.mapping.decimal)
        except CellError as exc:
            self.problem(exc.code, row, column, value, str(exc))
            return None
        if censored is not None:
            self.problem("non-numeric", row, column, value, "a dose cannot be censored")
            return None
        if event_map.kind != "infusion":
            return dose, event_map.dose_unit
        power = CELL_UNIT.match(event_map.dose_unit).group(1)
        cells = dose * 10 ** int(power or 0)
        finding = dose_finding(cells)
        if finding is not None:
            self.problem(finding.code, row, column, value, finding.message)
            return None
        return cells, "{cells}"

    # -- second pass: values --------------------------------------------------
    def _second_pass(self, number: int, cells: tuple, id_column: Column,
                     layout: Layout) -> None:
        if all(cell is None for cell in cells):
            return
        patient = self._patient(number, cells, id_column)
        if patient is None:
            return
        for slot in layout.slots(number, cells):
            self._value(patient, number, cells, slot)

    def _value(self, patient: PatientData, number: int, cells: tuple,
               slot: ValueSlot) -> None:
        raw = _cell(cells, slot.value.index)
        if raw is None:
            self.skip("blank value")
            return
        try:
            source_value, censored = parse_number(raw, self.mapping.decimal)
        except CellError as exc:
            self.problem(exc.code, number, slot.value, raw, str(exc))
            return
        censored = self._censoring(number, cells, slot, censored)
        converted = self._convert(number, cells, slot, source_value)
        when = self._when(patient, number, cells, slot)
        if censored is _BAD or converted is None or when is None:
            return
        value, unit = converted
        quantity = slot.column_map.quantity
        value, censored = undetected(quantity, value, censored, slot.column_map.lloq)
        finding = value_finding(quantity, value, censored)
        if finding is not None:
            self.problem(finding.code, number, slot.value, raw, finding.message)
            return
        patient.observations.append(Observation(
            quantity=quantity, time=when[0], value=value,
            unit=canonical_unit(quantity), censored=censored,
            source_code=f"tabular|{clean_text(slot.column_map.name)}",
            source_value=source_value, source_unit=clean_text(unit),
            source_id=_content_id(quantity, slot, when[0]),
            source_utc_offset_min=when[1],
        ))  # fmt: skip

    def _censoring(self, number: int, cells: tuple, slot: ValueSlot, censored):
        if slot.censored is None:
            return censored
        text = cell_text(_cell(cells, slot.censored.index))
        if text is None:
            return censored
        flag = CENSORED_WORDS.get(text.lower())
        if flag is None:
            self.problem("censored-invalid", number, slot.censored, text,
                         f"allowed: blank, {', '.join(sorted(CENSORED_WORDS))}")
            return _BAD
        if censored is not None and censored != flag:
            self.problem("conflict", number, slot.censored, text,
                         f"disagrees with the operator of the value in column "
                         f"{slot.value.letter}")
            return _BAD
        return flag

    def _convert(self, number: int, cells: tuple, slot: ValueSlot, source_value):
        unit_column = slot.unit
        unit = cell_text(_cell(cells, unit_column.index)) if unit_column else None
        if unit is None:
            unit_column = None
            unit = slot.value.unit or slot.column_map.unit
        if unit is None:
            self.problem("missing-unit", number, slot.value, source_value,
                         f"has no unit: no unit cell, and [columns."
                         f"{slot.column_map.name}] gives no unit")
            return None
        try:
            return to_canonical(source_value, unit, slot.column_map.quantity), unit
        except UnitError as exc:
            self.problem("unit", number, unit_column or slot.value, unit, str(exc))
            return None

    def _when(self, patient: PatientData, number: int, cells: tuple, slot: ValueSlot):
        day = slot.day
        if day is None:
            raw = _cell(cells, slot.time.index)
            if raw is None:
                what = "date" if self.mapping.time.anchor == "date" else "day offset"
                self.problem("missing-value", number, slot.time, "",
                             f"the value in column {slot.value.letter} has no {what}")
                return None
            if self.mapping.time.anchor == "date":
                return self._instant(patient, (number, slot.time, raw))
            try:
                day = parse_day(raw)
            except CellError as exc:
                self.problem(exc.code, number, slot.time, raw, str(exc))
                return None
        return self._day_instant(patient, number, slot, day)

    def _day_instant(self, patient: PatientData, number: int, slot: ValueSlot,
                     day: int):
        if patient.day_zero is None:
            if patient.source_id not in self.no_infusion:
                self.no_infusion.add(patient.source_id)
                self.problem("missing-infusion", number, slot.value, _HIDDEN,
                             "day offsets need the patient's infusion date, "
                             "which no row of this patient gives")
            return None
        when = patient.day_zero + dt.timedelta(days=day)
        return place_date(when, patient.day_zero_offset, self.mapping.time.default_time)

    # -- records ------------------------------------------------------------
    def _record(self, patient: PatientData, key: bytes) -> PatientRecord:
        pseudonym = patient.source_id
        if self.mapping.id_kind == "source":
            pseudonym = pseudonymise(patient.source_id, key)
        infusions = [e for e in patient.events if e.kind == "infusion"]
        product = min(infusions, key=lambda e: e.start).name if infusions else ""
        return PatientRecord(
            facts=PatientFacts(pseudonym=pseudonym, product=product or None),
            observations=tuple(patient.observations),
            events=tuple(patient.events),
            site_utc_offset_min=patient.offset,
        )


def _content_id(quantity: str, slot: ValueSlot, when: dt.datetime) -> str:
    """Source id of a value from what it is, not where it sits in the file."""
    name = clean_text(slot.column_map.name)
    return f"tabular:{quantity}:{name}@{when.isoformat()}"


def _cell(cells: tuple, index: int) -> object:
    return cells[index] if index < len(cells) else None


def _comparable(value: object) -> object:
    return value.strip() if isinstance(value, str) else value
