"""Header rows of a long or wide table: which column holds what.

A layout reads the header rows once and answers two questions for the reader
(:mod:`cartwin.io.tabular_read`): which columns hold per-patient facts (id,
site offset, event dates and names), and which cells of a data row are
values (:class:`ValueSlot`), with where their unit and time come from.

Long layout: one header row; each row holds one value, its quantity name,
its time and optionally its unit and censoring flag.

Wide layout: one row per patient; columns are grouped by visit. With several
header rows, ``visit_row`` holds the visit label (a label is carried to the
right over blank cells, as merged cells read), ``name_row`` the column name
and ``unit_row`` the unit. A column whose name-row cell is blank is a plain
column named by its first non-blank header cell (a header merged down over
the header rows) and ends the visit group to its left; a column without any
header text is ignored. With one header row, ``header_pattern`` splits each
header into ``visit``, ``name`` and optional ``unit`` (headers that do not
match are plain names, e.g. the id column). Per-patient columns (id, events,
site offset) are found by name wherever they stand.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Protocol, Sequence

from cartwin.io.tabular_cells import cell_text
from cartwin.io.tabular_grid import column_letter
from cartwin.io.tabular_mapping import ColumnMap, TabularMapping


@dataclass(frozen=True)
class Column:
    """One column of the table as its header rows describe it."""

    index: int
    name: str | None
    visit: str | None = None
    unit: str | None = None

    @property
    def letter(self) -> str:
        """Spreadsheet letter of the column."""
        return column_letter(self.index)

    @property
    def label(self) -> str:
        """``visit | name`` for wide group columns, else the name."""
        if self.visit is None:
            return self.name or ""
        return f"{self.visit} | {self.name}"


@dataclass(frozen=True)
class ValueSlot:
    """Where one value of a data row is, and where its unit and time are.

    Attributes
    ----------
    column_map : ColumnMap
        The quantity mapping of the value.
    value : Column
        Column of the value.
    time : Column or None
        Column of the value's date (anchor ``date``) or of its day offset
        (long layout, anchor ``infusion_day``); ``None`` when ``day`` is set.
    day : int or None
        Wide layout, anchor ``infusion_day``: the visit's day offset.
    unit : Column or None
        Long layout: the unit column.
    censored : Column or None
        Long layout: the censoring column.
    """

    column_map: ColumnMap
    value: Column
    time: Column | None = None
    day: int | None = None
    unit: Column | None = None
    censored: Column | None = None


class Reporter(Protocol):
    """What a layout needs from the reader: problems and skip counts."""

    def problem(self, code: str, row: int | None, column: Column | None,
                value: object, message: str) -> None: ...

    def skip(self, reason: str) -> None: ...


class Layout:
    """Shared part of the two layouts: columns, lookup by name, fixed roles."""

    def __init__(self, mapping: TabularMapping, columns: list[Column],
                 name_row: int, out: Reporter) -> None:
        self.mapping, self.columns = mapping, columns
        self.name_row, self.out = name_row, out
        self.used: set[int] = set()

    def find(self, name: str, what: str, pool: Sequence[Column] | None = None):
        """The one column called ``name`` (problems when none or several)."""
        found = [c for c in (self.columns if pool is None else pool) if c.name == name]
        if not found:
            headers = sorted({c.name for c in self.columns if c.name})
            self.out.problem("missing-column", self.name_row, None, name,
                             f"is named by the mapping ({what}) but no column has "
                             f"this header; headers: {headers}")
            return None
        for extra in found[1:]:
            self.out.problem("duplicate-header", self.name_row, extra, name,
                             f"header also in column {found[0].letter}; the "
                             f"mapping ({what}) cannot tell them apart")
        self.used.add(found[0].index)
        return found[0]

    def fixed_roles(self) -> dict[tuple, Column]:
        """Per-patient columns by role: id, offset, ``("event", kind, field)``."""
        roles: dict[tuple, Column | None] = {
            ("id",): self.find(self.mapping.id_column, "id_column")}
        if self.mapping.time.utc_offset_column:
            roles[("offset",)] = self.find(
                self.mapping.time.utc_offset_column, "[time] utc_offset_column")
        for event in self.mapping.events:
            for field in ("start_column", "end_column", "name_column", "dose_column"):
                name = getattr(event, field)
                if name is not None:
                    column = self.find(name, f"[events.{event.kind}] {field}")
                    roles[("event", event.kind, field)] = column
        return {role: column for role, column in roles.items() if column is not None}

    def ignored(self) -> tuple[str, ...]:
        """Labels of named columns the mapping does not read."""
        return tuple(c.label for c in self.columns
                     if c.index not in self.used and c.name is not None)

    def slots(self, row: int, cells: tuple) -> Iterable[ValueSlot]:
        """The values of one data row."""
        raise NotImplementedError


class LongLayout(Layout):
    """One value per row (see the module docstring)."""

    def __init__(self, mapping: TabularMapping, header: tuple, row: int,
                 out: Reporter) -> None:
        columns = [Column(i, cell_text(v)) for i, v in enumerate(header)]
        super().__init__(mapping, columns, row, out)
        self._report_duplicates()
        long, time = mapping.long, mapping.time
        self.quantity = self.find(long.quantity_column, "[long] quantity_column")
        self.value = self.find(long.value_column, "[long] value_column")
        self.time = self.find(time.column, "[time] column")
        self.unit = self._optional(long.unit_column, "[long] unit_column")
        self.censored = self._optional(long.censored_column, "[long] censored_column")

    def _report_duplicates(self) -> None:
        counts = Counter(c.name for c in self.columns if c.name)
        for name in (n for n, k in counts.items() if k > 1):
            same = [c for c in self.columns if c.name == name]
            for extra in same[1:]:
                self.out.problem("duplicate-header", self.name_row, extra, name,
                                 f"header also in column {same[0].letter}")

    def _optional(self, name: str | None, what: str) -> Column | None:
        return None if name is None else self.find(name, what)

    def slots(self, row: int, cells: tuple) -> Iterable[ValueSlot]:
        """The row's one value, or nothing when its quantity is blank or unmapped."""
        name = cell_text(_cell(cells, self.quantity.index))
        if name is None:
            self.out.skip("blank quantity")
            return ()
        column_map = self.mapping.column(name)
        if column_map is None:
            self._unmapped(row, name)
            return ()
        return (ValueSlot(column_map, self.value, self.time, None, self.unit,
                          self.censored),)

    def _unmapped(self, row: int, name: str) -> None:
        if self.mapping.unmapped == "error":
            self.out.problem("unmapped-quantity", row, self.quantity, name,
                             "is not mapped in [columns] (unmapped = 'error')")
        else:
            self.out.skip(f"unmapped quantity {name!r}")


class WideLayout(Layout):
    """One row per patient, column groups per visit (see the module docstring)."""

    def __init__(self, mapping: TabularMapping, header_rows: list[tuple[int, tuple]],
                 out: Reporter) -> None:
        wide = mapping.wide
        name_row = header_rows[(wide.name_row or 1) - 1][0]
        super().__init__(mapping, _wide_columns(wide, header_rows), name_row, out)
        self.visit_row = header_rows[(wide.visit_row or 1) - 1][0]
        fixed = {c.index for c in self.fixed_columns()}
        self.groups = _groups([c for c in self.columns if c.index not in fixed])
        self._report_duplicates()
        self._slots = self._build_slots()

    def fixed_columns(self) -> list[Column]:
        """Columns named like a per-patient column (id, offset, events)."""
        names = {self.mapping.id_column, self.mapping.time.utc_offset_column}
        for event in self.mapping.events:
            names.update((event.start_column, event.end_column,
                          event.name_column, event.dose_column))
        names.discard(None)
        return [c for c in self.columns if c.name in names]

    def _report_duplicates(self) -> None:
        for visit, columns in self.groups.items():
            seen: dict[str, Column] = {}
            for column in columns:
                if column.name in seen:
                    self.out.problem(
                        "duplicate-header", self.name_row, column, column.name,
                        f"visit {visit!r} has this header in column "
                        f"{seen[column.name].letter} too")
                seen.setdefault(column.name, column)

    def _build_slots(self) -> tuple[ValueSlot, ...]:
        slots, found = [], set()
        for visit, columns in self.groups.items():
            day = self._visit_day(visit, columns[0])
            for column in columns:
                column_map = self.mapping.column(column.name)
                if column_map is None:
                    continue
                found.add(column_map.name)
                self.used.add(column.index)
                slot = self._slot(visit, columns, column, column_map, day)
                if slot is not None:
                    slots.append(slot)
        self._report_unfound(found)
        return tuple(slots)

    def _slot(self, visit, columns, column, column_map, day) -> ValueSlot | None:
        if self.mapping.time.anchor == "infusion_day":
            return None if day is None else ValueSlot(column_map, column, day=day)
        date_name = column_map.date_column or self.mapping.time.column
        dates = [c for c in columns if c.name == date_name]
        if not dates:
            self.out.problem(
                "missing-column", self.name_row, column, date_name,
                f"visit {visit!r} has no date column with this header for the "
                f"value in column {column.letter} ({column.name!r})")
            return None
        self.used.add(dates[0].index)
        return ValueSlot(column_map, column, time=dates[0])

    def _visit_day(self, visit: str, first: Column) -> int | None:
        time = self.mapping.time
        if time.anchor != "infusion_day":
            return None
        days = dict(time.visit_days)
        if visit in days:
            return days[visit]
        pattern = time.visit_day_pattern
        match = pattern.fullmatch(visit) if pattern is not None else None
        if match is not None and _is_int(match.group("day")):
            return int(match.group("day"))
        self.out.problem("day-invalid", self.visit_row, first, visit,
                         "visit label gives no day offset: not in [time] visit_days "
                         "and not matched by visit_day_pattern")
        return None

    def _report_unfound(self, found: set[str]) -> None:
        for column_map in self.mapping.columns:
            if column_map.name not in found:
                self.out.problem(
                    "missing-column", self.name_row, None, column_map.name,
                    f"is mapped in [columns] but no visit group has a column with "
                    f"this header; visits: {list(self.groups)}")

    def slots(self, row: int, cells: tuple) -> Iterable[ValueSlot]:
        """Every mapped value column of every visit."""
        return self._slots


def _wide_columns(wide, header_rows: list[tuple[int, tuple]]) -> list[Column]:
    width = max((len(cells) for _, cells in header_rows), default=0)
    if wide.header_pattern is not None:
        return [_pattern_column(wide.header_pattern, i, _cell(header_rows[0][1], i))
                for i in range(width)]
    rows = [cells for _, cells in header_rows]
    columns, visit = [], None
    for i in range(width):
        name = cell_text(_cell(rows[wide.name_row - 1], i))
        if name is None:
            # A header merged down over all header rows (e.g. "Subject"):
            # a plain column, and the end of the visit group before it.
            plain = next((t for t in (cell_text(_cell(r, i)) for r in rows) if t), None)
            columns.append(Column(i, plain))
            visit = visit if plain is None else None
            continue
        visit = cell_text(_cell(rows[wide.visit_row - 1], i)) or visit
        unit = cell_text(_cell(rows[wide.unit_row - 1], i)) if wide.unit_row else None
        columns.append(Column(i, name, visit, unit))
    return columns


def _pattern_column(pattern, index: int, value: object) -> Column:
    header = cell_text(value)
    match = pattern.fullmatch(header) if header is not None else None
    if match is None:
        return Column(index, header)
    parts = match.groupdict()
    return Column(index, cell_text(parts["name"]), cell_text(parts["visit"]),
                  cell_text(parts.get("unit")))


def _groups(columns: list[Column]) -> dict[str, list[Column]]:
    groups: dict[str, list[Column]] = {}
    for column in columns:
        if column.visit is not None and column.name is not None:
            groups.setdefault(column.visit, []).append(column)
    return groups


def _cell(cells: tuple, index: int) -> object:
    return cells[index] if index < len(cells) else None


def _is_int(text: str) -> bool:
    try:
        int(text)
    except (TypeError, ValueError):
        return False
    return True
