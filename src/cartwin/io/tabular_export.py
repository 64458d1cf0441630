"""Write patient records as long or wide tables: CSV, XLSX or Parquet.

Long layout: one row per observation with the columns ``patient``
(pseudonym), ``time`` (ISO 8601, UTC), ``study_day``, ``quantity``, ``value``
(canonical unit), ``unit``, ``censored`` (``below``, ``above`` or blank), and
per-patient ``site_utc_offset_min``, ``infusion_time`` and ``product``.

Wide layout: one row per patient; the per-patient columns first, then one
column group per study day. Three header rows: the group label (``day 7``;
``day 7 #2`` for a second value of some quantity on the same day), the column
name (``crp`` and its own ``crp time``) and the unit. A censored value is
written as text, ``<0.5`` or ``>5000``. A patient without an infusion has no
study day and cannot be written in this layout.

CSV cells are text (numbers in Python's shortest round-trip form), so values
read back bit for bit. A text cell that a spreadsheet would run as a formula
(it starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return, and is
not a number) is written with a single quote in front, as the OWASP advice on
CSV injection recommends
(https://owasp.org/www-community/attacks/CSV_Injection): a product named
``=HYPERLINK(...)`` is written ``'=HYPERLINK(...)``. Numbers, negative ones
included, and censored values such as ``<0.5`` are unaffected; such a text
reads back with its quote. XLSX cells hold numbers as numbers and times as ISO
text (an Excel date has no zone and only millisecond precision); ``openpyxl``
writes numbers with 16 significant digits, so a value may come back one unit
in the last place off (0.1 + 0.2 reads back as 0.3); text cells are typed as
text, never formulas. Parquet (written by DuckDB) has typed columns:
``DOUBLE`` values (``VARCHAR`` in a wide value column that holds a censored
value), ``TIMESTAMPTZ`` times and ``INTEGER`` days; its single header row
carries the three wide header rows as ``visit|name|unit``.

:func:`mapping_toml` writes the mapping that reads such a file back with
:func:`cartwin.io.tabular.read_tabular` (ids are kept as pseudonyms).

Known limits: only observations, the infusion (time and product) and the
site offset are written; other events and patient facts are not. In the long
layout a patient without observations has no row.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import re
from collections import Counter
from dataclasses import dataclass
from typing import Sequence

from cartwin.errors import DataError
from cartwin.record.model import PatientRecord
from cartwin.record.units import canonical_unit

_UTC = dt.timezone.utc
_OPERATOR = {"below": "<", "above": ">"}
#: Per-patient columns written in both layouts, after ``patient``.
PATIENT_COLUMNS = ("site_utc_offset_min", "infusion_time", "product")
#: Splits a flattened Parquet header ``visit|name|unit`` (wide layout).
WIDE_PARQUET_PATTERN = r"^(?P<visit>[^|]+)\|(?P<name>[^|]+)\|(?P<unit>[^|]*)$"


@dataclass(frozen=True)
class Table:
    """Cells of a table to write.

    Attributes
    ----------
    header_rows : tuple[tuple[str, ...], ...]
        One header row (long) or three (wide: visit, name, unit), each label
        given in every column of its group.
    rows : tuple[tuple, ...]
        Cells: ``None``, ``str``, ``int``, ``float`` or aware ``datetime``.
    types : tuple[str, ...]
        SQL type of each column for Parquet.
    quantities : tuple[str, ...]
        Quantities present, sorted.
    """

    header_rows: tuple[tuple[str, ...], ...]
    rows: tuple[tuple, ...]
    types: tuple[str, ...]
    quantities: tuple[str, ...]


def _patient_cells(record: PatientRecord) -> tuple:
    infusion = record.infusion
    return (
        record.facts.pseudonym,
        record.site_utc_offset_min,
        infusion.start.astimezone(_UTC) if infusion else None,
        record.facts.product or (infusion.name if infusion else None) or None,
    )


_PATIENT_TYPES = ("VARCHAR", "INTEGER", "TIMESTAMPTZ", "VARCHAR")


def long_table(records: Sequence[PatientRecord]) -> Table:
    """One row per observation (see the module docstring)."""
    names = ("patient", "time", "study_day", "quantity", "value", "unit", "censored")
    rows = []
    for record in records:
        patient, *per_patient = _patient_cells(record)
        for obs in record.observations:
            day = record.study_day(obs.time) if record.infusion else None
            rows.append((patient, obs.time.astimezone(_UTC), day, obs.quantity,
                         float(obs.value), obs.unit, obs.censored, *per_patient))
    types = ("VARCHAR", "TIMESTAMPTZ", "INTEGER", "VARCHAR", "DOUBLE", "VARCHAR",
             "VARCHAR") + _PATIENT_TYPES[1:]
    quantities = sorted({row[3] for row in rows})
    return Table(((*names, *PATIENT_COLUMNS),), tuple(rows), types, tuple(quantities))


def wide_table(records: Sequence[PatientRecord]) -> Table:
    """One row per patient, one column group per study day.

    Raises
    ------
    DataError
        When a record has no infusion (no study day), naming its pseudonym.
    """
    cells = [_day_cells(record) for record in records]
    groups = sorted({(day, k, q) for c in cells for (day, k, q) in c})
    header = [("",) * 4, ("patient", *PATIENT_COLUMNS), ("",) * 4]
    types = ["VARCHAR", *_PATIENT_TYPES[1:]]
    for day, k, quantity in groups:
        visit = f"day {day}" if k == 0 else f"day {day} #{k + 1}"
        header[0] += (visit, visit)
        header[1] += (quantity, f"{quantity} time")
        header[2] += (canonical_unit(quantity), "")
        censored = any(isinstance(c.get((day, k, quantity), (None,))[0], str)
                       for c in cells)
        types += ["VARCHAR" if censored else "DOUBLE", "TIMESTAMPTZ"]
    rows = []
    for record, by_key in zip(records, cells):
        row = list(_patient_cells(record))
        for key in groups:
            row += list(by_key.get(key, (None, None)))
        rows.append(tuple(row))
    rows = _text_values(rows, types)
    quantities = tuple(sorted({q for _, _, q in groups}))
    return Table(tuple(header), tuple(rows), tuple(types), quantities)


def _day_cells(record: PatientRecord) -> dict[tuple[int, int, str], tuple]:
    if record.infusion is None:
        raise DataError(
            f"patient {record.facts.pseudonym} has no infusion event, so no study "
            "day: the wide layout groups columns by study day; use layout='long'"
        )
    seen: Counter[tuple[int, str]] = Counter()
    cells = {}
    for obs in record.observations:
        day = record.study_day(obs.time)
        k = seen[(day, obs.quantity)]
        seen[(day, obs.quantity)] += 1
        value = float(obs.value)
        if obs.censored is not None:
            value = f"{_OPERATOR[obs.censored]}{value!r}"
        cells[(day, k, obs.quantity)] = (value, obs.time.astimezone(_UTC))
    return cells


def _text_values(rows: list[tuple], types: list[str]) -> list[tuple]:
    """Exact values of VARCHAR value columns as text too (Parquet is typed)."""
    first = len(_PATIENT_TYPES)
    text_columns = [i for i, t in enumerate(types) if t == "VARCHAR" and i >= first]
    out = []
    for row in rows:
        row = list(row)
        for i in text_columns:
            if isinstance(row[i], float):
                row[i] = repr(row[i])
        out.append(tuple(row))
    return out


# -- writers --------------------------------------------------------------------
def text_cell(value: object) -> str:
    """A cell as CSV text: floats in shortest round-trip form, times ISO UTC."""
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, dt.datetime):
        return value.astimezone(_UTC).isoformat()
    return str(value)


def sparse_header(table: Table) -> list[list[str]]:
    """Header rows with each visit label only at the start of its group."""
    rows = [list(r) for r in table.header_rows]
    if len(rows) > 1:
        labels = rows[0]
        rows[0] = [v if i == 0 or v != labels[i - 1] else ""
                   for i, v in enumerate(labels)]
    return rows


def write_csv(table: Table, handle) -> None:
    """Write ``table`` to an open text ``handle`` (opened with ``newline=""``).

    Text cells that a spreadsheet would read as a formula are quoted with a
    leading ``'`` (see :func:`formula_safe`).
    """
    writer = csv.writer(handle)
    writer.writerows([formula_safe(v) for v in row] for row in sparse_header(table))
    writer.writerows(
        [formula_safe(text_cell(v)) if isinstance(v, str) else text_cell(v)
         for v in row]
        for row in table.rows
    )  # fmt: skip


_DECIMAL = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
#: First characters that make a spreadsheet read a cell as a formula.
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def formula_safe(text: str) -> str:
    """``text`` with a leading ``'`` when a spreadsheet would run it as a formula.

    Numbers (``-5.0``, ``+1e3``) stay as they are.

    Examples
    --------
    >>> formula_safe("=1+1"), formula_safe("-5.0"), formula_safe("axi-cel")
    ("'=1+1", '-5.0', 'axi-cel')
    """
    if not text.startswith(FORMULA_TRIGGERS) or _is_number(text):
        return text
    return "'" + text


def _is_number(text: str) -> bool:
    return _DECIMAL.match(text) is not None


def write_xlsx(table: Table, path, sheet: str) -> None:
    """Write ``table`` to an XLSX file with one sheet (``openpyxl``)."""
    try:
        import openpyxl
    except ImportError:
        raise DataError("writing XLSX needs the openpyxl package "
                        "(pip install openpyxl)") from None

    book = openpyxl.Workbook()
    ws = book.active
    ws.title = sheet
    header = sparse_header(table)
    for row in (*header, *table.rows):
        ws.append([_xlsx_cell(v) for v in row])
    for cell in (c for row in ws.iter_rows() for c in row):
        if isinstance(cell.value, str) and cell.value.startswith("="):
            cell.data_type = "s"  # text, never a formula
    if len(header) > 1:
        _merge_visits(ws, table.header_rows[0])
    book.save(path)


def _xlsx_cell(value: object) -> object:
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        return value.astimezone(_UTC).isoformat()
    return value


def _merge_visits(ws, labels: tuple[str, ...]) -> None:
    start = 0
    for i in range(1, len(labels) + 1):
        if i == len(labels) or labels[i] != labels[start]:
            if labels[start] and i - start > 1:
                ws.merge_cells(start_row=1, start_column=start + 1,
                               end_row=1, end_column=i)
            start = i


def parquet_names(table: Table) -> list[str]:
    """Column names of the Parquet file (wide: ``visit|name|unit``)."""
    if len(table.header_rows) == 1:
        return list(table.header_rows[0])
    visits, names, units = table.header_rows
    return [n if not v else f"{v}|{n}|{u}" for v, n, u in zip(visits, names, units)]


def write_parquet(table: Table, path: str) -> None:
    """Write ``table`` as Parquet with DuckDB's ``COPY ... (FORMAT PARQUET)``."""
    import duckdb
    import numpy as np

    names = parquet_names(table)
    columns = {}
    for i, sql_type in enumerate(table.types):
        cells = [row[i] for row in table.rows]
        if sql_type == "TIMESTAMPTZ":
            cells = [None if v is None else _epoch_us(v) for v in cells]
        columns[f"c{i}"] = np.array(cells, dtype=object)
    select = ", ".join(
        _select(i, sql_type, name)
        for i, (sql_type, name) in enumerate(zip(table.types, names)))
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.register("cartwin_export", columns)
        target = str(path).replace("'", "''")
        con.execute(f"COPY (SELECT {select} FROM cartwin_export) "
                    f"TO '{target}' (FORMAT PARQUET)")
    finally:
        con.close()


def _select(index: int, sql_type: str, name: str) -> str:
    quoted = '"' + name.replace('"', '""') + '"'
    if sql_type == "TIMESTAMPTZ":
        micros = f"CAST(c{index} AS BIGINT)"
        return f"CAST(make_timestamp({micros}) AS TIMESTAMPTZ) AS {quoted}"
    return f"CAST(c{index} AS {sql_type}) AS {quoted}"


def _epoch_us(when: dt.datetime) -> int:
    return (when - dt.datetime(1970, 1, 1, tzinfo=_UTC)) // dt.timedelta(microseconds=1)


# -- mapping --------------------------------------------------------------------
def mapping_toml(table: Table, layout: str, file_format: str, sheet: str) -> str:
    """TOML mapping that reads the written table back."""
    lines = [
        "# Written by cartwin with the exported table; reads it back with",
        "# cartwin.io.tabular.read_tabular (ids are already pseudonyms).",
        f"layout = {_q(layout)}",
        'id_column = "patient"',
        'id_kind = "pseudonym"',
    ]
    if file_format == "xlsx":
        lines.append(f"sheet = {_q(sheet)}")
    if layout == "wide" and file_format != "parquet":
        lines.append("header_rows = 3")
    lines += ["", "[time]", 'anchor = "date"',
              'utc_offset_column = "site_utc_offset_min"']
    if layout == "long":
        lines += ['column = "time"', "", "[long]", 'quantity_column = "quantity"',
                  'value_column = "value"', 'unit_column = "unit"',
                  'censored_column = "censored"']
    elif file_format == "parquet":
        lines += ["", "[wide]", f"header_pattern = '{WIDE_PARQUET_PATTERN}'"]
    else:
        lines += ["", "[wide]", "visit_row = 1", "name_row = 2", "unit_row = 3"]
    lines += ["", "[events.infusion]", 'start_column = "infusion_time"',
              'name_column = "product"']
    for quantity in table.quantities:
        lines += ["", f"[columns.{_q(quantity)}]", f"quantity = {_q(quantity)}"]
        if layout == "wide":
            lines.append(f"date_column = {_q(quantity + ' time')}")
        else:
            lines.append(f"unit = {_q(canonical_unit(quantity))}")
    return "\n".join(lines) + "\n"


def _q(text: str) -> str:
    """A TOML basic string (JSON escapes are valid TOML escapes)."""
    return json.dumps(text, ensure_ascii=False)
