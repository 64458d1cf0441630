"""The TOML mapping that tells the tabular reader what a table holds.

A mapping is checked completely when it is loaded, before any table is read:
unknown keys, unknown quantities, units that cannot be converted to the
quantity's canonical unit and inconsistent choices are errors naming the
mapping file, the key and the value. The keys are documented in
``cartwin/data/examples/tabular_long.toml`` and ``tabular_wide.toml`` and in
:mod:`cartwin.io.tabular`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from cartwin.errors import UnitError
from cartwin.io.tabular_problems import TabularMappingError
from cartwin.record.model import EVENT_KINDS
from cartwin.record.units import quantity_specs, to_canonical

#: Largest UTC offset in use anywhere (UTC+14:00), in minutes.
MAX_UTC_OFFSET_MIN = 14 * 60
#: A CAR T dose unit: cells, optionally scaled by a power of ten.
CELL_UNIT = re.compile(r"^(?:10[*^](\d{1,2})\s*)?(?:\{cells?\}|cells?)$")
_REQUIRED = object()


@dataclass(frozen=True)
class ColumnMap:
    """One quantity of the file mapped to a cartwin quantity.

    Attributes
    ----------
    name : str
        Long layout: a value of the quantity column; wide layout: the header
        of the value's column in the name row.
    quantity : str
        cartwin quantity key (``quantities.csv``).
    unit : str or None
        UCUM unit used when the file gives none for a value.
    date_column : str or None
        Wide layout: header of this value's own date column in its visit group.
    lloq : float or None
        Lower limit of quantification of the assay, in the canonical unit of
        the quantity: a CAR T level of 0 is then stored as censored below it
        (without it, such a 0 is refused; see :mod:`cartwin.io._checks`).
    """

    name: str
    quantity: str
    unit: str | None = None
    date_column: str | None = None
    lloq: float | None = None


@dataclass(frozen=True)
class EventMap:
    """Per-patient columns that make one event (infusion, lymphodepletion, ...).

    Attributes
    ----------
    kind : str
        One of :data:`cartwin.record.model.EVENT_KINDS`.
    start_column : str
        Header of the start date or date-time.
    end_column : str or None
        Header of the end date or date-time.
    name_column : str or None
        Header of the product or drug name.
    name : str
        Fixed name used when there is no ``name_column`` (or its cell is blank).
    dose_column, dose_unit : str or None
        Header of the dose, and its unit; an infusion dose must be in cells
        (``{cells}`` or ``10*N{cells}``) and is stored in ``{cells}``.
    """

    kind: str
    start_column: str
    end_column: str | None = None
    name_column: str | None = None
    name: str = ""
    dose_column: str | None = None
    dose_unit: str | None = None


@dataclass(frozen=True)
class TimeMap:
    """How the time of each value is found (see :mod:`cartwin.io.tabular`)."""

    anchor: str
    column: str | None
    utc_offset_min: int | None
    utc_offset_column: str | None
    date_format: str | None
    default_time: dt.time
    visit_days: tuple[tuple[str, int], ...] = ()
    visit_day_pattern: re.Pattern | None = None


@dataclass(frozen=True)
class LongMap:
    """Columns of the long layout (one value per row)."""

    quantity_column: str
    value_column: str
    unit_column: str | None = None
    censored_column: str | None = None


@dataclass(frozen=True)
class WideMap:
    """Header rows of the wide layout (1-based within the header rows)."""

    visit_row: int | None = None
    name_row: int | None = None
    unit_row: int | None = None
    header_pattern: re.Pattern | None = None


@dataclass(frozen=True)
class TabularMapping:
    """A loaded and checked mapping file (see :func:`load_mapping`)."""

    source: str
    sha256: str
    layout: str
    id_column: str
    id_kind: str
    sheet: str | None
    skip_rows: int
    header_rows: int
    delimiter: str
    encoding: str
    decimal: str
    unmapped: str
    time: TimeMap
    columns: tuple[ColumnMap, ...]
    events: tuple[EventMap, ...] = ()
    long: LongMap | None = None
    wide: WideMap | None = None

    def column(self, name: str) -> ColumnMap | None:
        """The column map of a file quantity name, or ``None``."""
        for item in self.columns:
            if item.name == name:
                return item
        return None

    def event(self, kind: str) -> EventMap | None:
        """The event map of ``kind``, or ``None``."""
        for item in self.events:
            if item.kind == kind:
                return item
        return None


class _Section:
    """Typed access to one TOML table that rejects keys nobody read."""

    def __init__(self, source: str, path: str, data: object) -> None:
        self.source, self.path = source, path
        if not isinstance(data, dict):
            self.fail(None, data, "must be a table")
        self.data = dict(data)
        self.seen: set[str] = set()

    def fail(self, key: str | None, value: object, message: str) -> NoReturn:
        where = f"[{self.path}]" if self.path else "top level"
        if key is not None:
            where += f" key {key!r}"
        raise TabularMappingError(
            f"mapping {self.source}: {where} = {value!r}: {message}")

    def get(self, key: str, kind: type | tuple, default=_REQUIRED):
        self.seen.add(key)
        if key not in self.data:
            if default is _REQUIRED:
                self.fail(key, None, "is required")
            return default
        value = self.data[key]
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
            names = kind.__name__ if isinstance(kind, type) else "/".join(
                k.__name__ for k in kind)
            self.fail(key, value, f"must be of type {names}")
        return value

    def text(self, key: str, default=_REQUIRED, choices: tuple = ()) -> str | None:
        value = self.get(key, str, default)
        if key in self.data and not value.strip():
            self.fail(key, value, "must not be blank")
        if choices and value not in choices:
            self.fail(key, value, f"allowed: {', '.join(map(repr, choices))}")
        return value

    def integer(self, key: str, default, low: int, high: int) -> int | None:
        value = self.get(key, int, default)
        if value is not None and not low <= value <= high:
            self.fail(key, value, f"allowed: {low} to {high}")
        return value

    def table(self, key: str, required: bool = False) -> _Section | None:
        value = self.get(key, dict, _REQUIRED if required else None)
        if value is None:
            return None
        path = f"{self.path}.{key}" if self.path else key
        return _Section(self.source, path, value)

    def finish(self) -> None:
        unknown = sorted(set(self.data) - self.seen)
        if unknown:
            self.fail(unknown[0], self.data[unknown[0]],
                      f"unknown key; allowed here: {', '.join(sorted(self.seen))}")


def load_mapping(path: str | os.PathLike) -> TabularMapping:
    """Read and check a TOML mapping file.

    Parameters
    ----------
    path : path
        The ``.toml`` mapping (see ``cartwin/data/examples/``).

    Returns
    -------
    TabularMapping

    Raises
    ------
    TabularMappingError
        When the file cannot be read, is not TOML, has unknown or missing
        keys, names an unknown quantity or event kind, or gives a unit that
        cannot be converted to the quantity's canonical unit.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise TabularMappingError(f"mapping {path}: cannot be read ({exc})") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise TabularMappingError(f"mapping {path.name}: is not TOML ({exc})") from None
    return parse_mapping(data, source=path.name, sha256=hashlib.sha256(raw).hexdigest())


def parse_mapping(data: dict, *, source: str, sha256: str = "") -> TabularMapping:
    """Check a mapping already parsed from TOML (see :func:`load_mapping`)."""
    top = _Section(source, "", data)
    layout = top.text("layout", choices=("long", "wide"))
    header_rows = top.integer("header_rows", 1, 1, 20)
    if layout == "long" and header_rows != 1:
        top.fail("header_rows", header_rows, "the long layout has one header row")
    columns = _columns(top.table("columns", required=True), layout)
    time = _time(top.table("time", required=True), layout)
    mapping = TabularMapping(
        source=source,
        sha256=sha256,
        layout=layout,
        id_column=top.text("id_column"),
        id_kind=top.text("id_kind", "source", ("source", "pseudonym")),
        sheet=top.text("sheet", None),
        skip_rows=top.integer("skip_rows", 0, 0, 1000),
        header_rows=header_rows,
        delimiter=_delimiter(top),
        encoding=top.text("encoding", "utf-8-sig"),
        decimal=top.text("decimal", ".", (".", ",")),
        unmapped=top.text("unmapped", "skip", ("skip", "error")),
        time=time,
        columns=columns,
        events=_events(top.table("events")),
        long=_long(top.table("long", required=layout == "long"), layout),
        wide=_wide(top.table("wide", required=layout == "wide"), layout, header_rows),
    )
    top.finish()
    _check_consistency(top, mapping)
    return mapping


def _delimiter(top: _Section) -> str:
    value = top.get("delimiter", str, ",")
    if len(value) != 1:
        top.fail("delimiter", value, "must be one character (',', ';', '\\t')")
    return value


def _columns(section: _Section, layout: str) -> tuple[ColumnMap, ...]:
    if not section.data:
        section.fail(None, {}, "maps no quantity; add [columns.NAME] tables")
    items = []
    for name in section.data:
        value = section.get(name, (str, dict))
        if isinstance(value, str):
            value = {"quantity": value}
        table = _Section(section.source, f"columns.{name}", value)
        items.append(_column(table, name, layout))
    return tuple(items)


def _column(section: _Section, name: str, layout: str) -> ColumnMap:
    quantity = section.text("quantity", choices=tuple(quantity_specs()))
    unit = section.text("unit", None)
    date_column = section.text("date_column", None)
    lloq = section.get("lloq", (int, float), None)
    section.finish()
    if date_column is not None and layout != "wide":
        section.fail("date_column", date_column, "is read in the wide layout only")
    if lloq is not None and (isinstance(lloq, bool) or not math.isfinite(lloq)
                             or lloq <= 0):
        section.fail("lloq", lloq, "must be a positive number (canonical unit)")
    if unit is not None:
        try:
            to_canonical(1.0, unit, quantity)
        except UnitError as exc:
            section.fail("unit", unit, str(exc))
    return ColumnMap(name, quantity, unit, date_column,
                     None if lloq is None else float(lloq))  # fmt: skip


def _time(section: _Section, layout: str) -> TimeMap:
    anchor = section.text("anchor", choices=("date", "infusion_day"))
    time = TimeMap(
        anchor=anchor,
        column=section.text("column", None),
        utc_offset_min=section.integer(
            "utc_offset_min", None, -MAX_UTC_OFFSET_MIN, MAX_UTC_OFFSET_MIN),
        utc_offset_column=section.text("utc_offset_column", None),
        date_format=section.text("date_format", None),
        default_time=_clock(section),
        visit_days=_visit_days(section),
        visit_day_pattern=_pattern(section, "visit_day_pattern", ("day",)),
    )
    section.finish()
    _check_time(section, time, layout)
    return time


def _clock(section: _Section) -> dt.time:
    text = section.text("default_time", "12:00")
    try:
        clock = dt.time.fromisoformat(text)
    except ValueError:
        section.fail("default_time", text, "must be a clock time HH:MM")
    if clock.tzinfo is not None:
        section.fail("default_time", text, "is site time; give no zone")
    return clock


def _visit_days(section: _Section) -> tuple[tuple[str, int], ...]:
    table = section.table("visit_days")
    if table is None:
        return ()
    days = tuple((label, table.integer(label, _REQUIRED, -3650, 36500))
                 for label in table.data)
    table.finish()
    return days


def _pattern(section: _Section, key: str, groups: tuple[str, ...]) -> re.Pattern | None:
    text = section.text(key, None)
    if text is None:
        return None
    try:
        pattern = re.compile(text)
    except re.error as exc:
        section.fail(key, text, f"is not a regular expression ({exc})")
    missing = [g for g in groups if g not in pattern.groupindex]
    if missing:
        section.fail(key, text, f"needs the named group(s) {', '.join(missing)}, "
                                "written (?P<name>...)")
    return pattern


def _check_time(section: _Section, time: TimeMap, layout: str) -> None:
    by_visit = bool(time.visit_days) or time.visit_day_pattern is not None
    if by_visit and not (layout == "wide" and time.anchor == "infusion_day"):
        given = dict(time.visit_days) or time.visit_day_pattern.pattern
        section.fail("visit_days", given,
                     "is read in the wide layout with anchor = 'infusion_day' only")
    if layout == "wide" and time.anchor == "infusion_day" and not by_visit:
        section.fail("anchor", time.anchor,
                     "the wide layout needs visit_days or visit_day_pattern to "
                     "give each visit its day")
    if layout == "long" and time.column is None:
        section.fail("column", None, "is required in the long layout")
    if time.utc_offset_min is not None and time.utc_offset_column is not None:
        section.fail("utc_offset_column", time.utc_offset_column,
                     "give utc_offset_min or utc_offset_column, not both")


def _events(section: _Section | None) -> tuple[EventMap, ...]:
    if section is None:
        return ()
    events = []
    for kind in section.data:
        section.get(kind, dict)
        if kind not in EVENT_KINDS:
            section.fail(kind, section.data[kind],
                         f"unknown event kind; allowed: {', '.join(EVENT_KINDS)}")
        events.append(_event(section.table(kind), kind))
    return tuple(events)


def _event(section: _Section, kind: str) -> EventMap:
    event = EventMap(
        kind=kind,
        start_column=section.text("start_column"),
        end_column=section.text("end_column", None),
        name_column=section.text("name_column", None),
        name=section.text("name", ""),
        dose_column=section.text("dose_column", None),
        dose_unit=section.text("dose_unit", None),
    )
    section.finish()
    if (event.dose_column is None) != (event.dose_unit is None):
        section.fail("dose_unit", event.dose_unit,
                     "give dose_column and dose_unit together")
    if kind == "infusion" and event.dose_unit and not CELL_UNIT.match(event.dose_unit):
        section.fail("dose_unit", event.dose_unit, "a CAR T dose is a number of cells: "
                                                   "{cells} or 10*N{cells}")
    return event


def _long(section: _Section | None, layout: str) -> LongMap | None:
    if section is None:
        return None
    if layout != "long":
        section.fail(None, section.data, "is read in the long layout only")
    long = LongMap(
        quantity_column=section.text("quantity_column"),
        value_column=section.text("value_column"),
        unit_column=section.text("unit_column", None),
        censored_column=section.text("censored_column", None),
    )
    section.finish()
    return long


def _wide(section: _Section | None, layout: str, header_rows: int) -> WideMap | None:
    if section is None:
        return None
    if layout != "wide":
        section.fail(None, section.data, "is read in the wide layout only")
    wide = WideMap(
        visit_row=section.integer("visit_row", None, 1, header_rows),
        name_row=section.integer("name_row", None, 1, header_rows),
        unit_row=section.integer("unit_row", None, 1, header_rows),
        header_pattern=_pattern(section, "header_pattern", ("visit", "name")),
    )
    section.finish()
    _check_wide(section, wide, header_rows)
    return wide


def _check_wide(section: _Section, wide: WideMap, header_rows: int) -> None:
    rows = [r for r in (wide.visit_row, wide.name_row, wide.unit_row) if r is not None]
    if wide.header_pattern is not None:
        if header_rows != 1 or rows:
            section.fail("header_pattern", wide.header_pattern.pattern,
                         "splits one header row; use it without header_rows > 1 "
                         "and without visit_row/name_row/unit_row")
        return
    if wide.visit_row is None or wide.name_row is None:
        section.fail("visit_row", wide.visit_row,
                     "give visit_row and name_row (several header rows) or "
                     "header_pattern (one header row)")
    if len(set(rows)) != len(rows):
        section.fail("name_row", wide.name_row, "visit, name and unit rows must differ")


def _check_consistency(top: _Section, mapping: TabularMapping) -> None:
    time = mapping.time
    if time.anchor == "infusion_day" and mapping.event("infusion") is None:
        top.fail("time", time.anchor,
                 "anchor = 'infusion_day' needs an [events.infusion] table")
    if mapping.layout == "wide" and time.anchor == "infusion_day":
        dated = [c.name for c in mapping.columns if c.date_column is not None]
        if dated or time.column is not None:
            top.fail("time", time.column or dated,
                     "with anchor = 'infusion_day' the visit labels give each "
                     "value's day; remove [time] column and date_column")
    if mapping.layout == "wide" and mapping.time.anchor == "date":
        undated = [c.name for c in mapping.columns if c.date_column is None]
        if undated and mapping.time.column is None:
            top.fail("time", None, f"columns {undated} have no date_column; set "
                                   "[time] column to the date column of each visit")
