"""Read CSV, XLSX and Parquet files into one grid of cells.

Every format becomes a :class:`Grid`: rows numbered as a spreadsheet shows
them (the first line of a CSV, the first row of a sheet, the column names of a
Parquet file are row 1), each a tuple of cell values: ``None`` (blank),
``str``, ``int``, ``float``, :class:`datetime.date` (a date without time) or
:class:`datetime.datetime` (naive, or aware for Parquet ``TIMESTAMPTZ``).

- CSV: :mod:`csv` from the standard library; every non-blank cell is text.
- XLSX: ``openpyxl`` in read-only mode, cached formula results
  (``data_only``). A date cell whose number format shows no clock time
  becomes a ``date``. Merged cells keep their value in the top-left cell only.
- Parquet: DuckDB's native Parquet reader (``read_parquet``), session time
  zone UTC, so ``TIMESTAMPTZ`` columns arrive as aware UTC instants and
  ``TIMESTAMP`` columns as naive date-times.
"""

from __future__ import annotations

import csv
import datetime as dt
import decimal
import io
from dataclasses import dataclass
from pathlib import Path

from cartwin.io.tabular_problems import CellProblem, TabularImportError

#: File formats by suffix.
SUFFIX_FORMATS = {
    ".csv": "csv", ".tsv": "csv", ".txt": "csv",
    ".xlsx": "xlsx", ".xlsm": "xlsx",
    ".parquet": "parquet", ".pq": "parquet",
}  # fmt: skip

@dataclass(frozen=True)
class Grid:
    """The cells of one table.

    Attributes
    ----------
    source : str
        File name shown in messages.
    sheet : str
        Sheet read (XLSX), ``""`` otherwise.
    file_format : str
        ``"csv"``, ``"xlsx"`` or ``"parquet"``.
    rows : tuple[tuple[int, tuple], ...]
        ``(row number, cells)`` in file order.
    """

    source: str
    sheet: str
    file_format: str
    rows: tuple[tuple[int, tuple], ...]


def column_letter(index: int) -> str:
    """Spreadsheet letter of a 0-based column index.

    Examples
    --------
    >>> column_letter(0), column_letter(25), column_letter(26), column_letter(701)
    ('A', 'Z', 'AA', 'ZZ')
    """
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(ord("A") + rest) + letters
    return letters


def file_format_of(path: Path, file_format: str | None = None) -> str:
    """``csv``, ``xlsx`` or ``parquet``, from ``file_format`` or the suffix.

    Raises
    ------
    TabularImportError
        When the suffix is not one of :data:`SUFFIX_FORMATS` and no format is given.
    """
    if file_format is not None:
        if file_format not in ("csv", "xlsx", "parquet"):
            _fail(path.name, "", f"format {file_format!r} is not csv, xlsx or parquet")
        return file_format
    found = SUFFIX_FORMATS.get(path.suffix.lower())
    if found is None:
        _fail(path.name, "", f"suffix {path.suffix!r} is not one of "
                             f"{', '.join(SUFFIX_FORMATS)}; pass the format")
    return found


def read_grid(
    path: Path, raw: bytes, file_format: str, *, source: str,
    sheet: str | None = None, delimiter: str = ",", encoding: str = "utf-8-sig",
) -> Grid:  # fmt: skip
    """Read the cells of ``raw`` (the bytes of ``path``) in ``file_format``.

    Raises
    ------
    TabularImportError
        With one ``io`` problem when the file cannot be parsed or the sheet
        does not exist.
    """
    if file_format == "csv":
        return Grid(source, "", "csv", _csv_rows(raw, source, delimiter, encoding))
    if file_format == "xlsx":
        name, rows = _xlsx_rows(raw, source, sheet)
        return Grid(source, name, "xlsx", rows)
    return Grid(source, "", "parquet", _parquet_rows(path, source))


def _fail(source: str, sheet: str, message: str, row: int | None = None):
    raise TabularImportError([CellProblem("io", source, message, sheet, row)])


def _csv_rows(raw: bytes, source: str, delimiter: str, encoding: str) -> tuple:
    try:
        text = raw.decode(encoding)
    except (UnicodeDecodeError, LookupError) as exc:
        _fail(source, "", f"cannot be decoded as {encoding} ({exc}); set "
                          "encoding in the mapping")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    rows = []
    try:
        for number, cells in enumerate(reader, start=1):
            rows.append((number, tuple(c if c.strip() else None for c in cells)))
    except csv.Error as exc:
        _fail(source, "", f"is not valid CSV ({exc})", reader.line_num)
    return tuple(rows)


def _xlsx_rows(raw: bytes, source: str, sheet: str | None) -> tuple[str, tuple]:
    try:
        import openpyxl
    except ImportError:
        _fail(source, sheet or "", "reading XLSX needs the openpyxl package "
                                   "(pip install openpyxl)")
    try:
        book = openpyxl.load_workbook(io.BytesIO(raw), read_only=True, data_only=True)
    except Exception as exc:  # zipfile, XML and openpyxl errors of many kinds
        _fail(source, sheet or "", f"is not a readable XLSX workbook ({exc})")
    try:
        names = book.sheetnames
        if sheet is not None and sheet not in names:
            _fail(source, sheet, f"has no sheet {sheet!r}; sheets: {names}")
        chosen = book[sheet] if sheet is not None else book[names[0]]
        rows = tuple(
            (number, tuple(_xlsx_value(cell) for cell in cells))
            for number, cells in enumerate(chosen.iter_rows(min_row=1), start=1)
        )
        return chosen.title, rows
    finally:
        book.close()


def _xlsx_value(cell) -> object:
    value = cell.value
    if isinstance(value, str) and not value.strip():
        return None
    if isinstance(value, dt.datetime) and value.time() == dt.time(0):
        fmt = (getattr(cell, "number_format", "") or "").lower()
        if "h" not in fmt and "s" not in fmt:
            return value.date()
    return value


def _parquet_rows(path: Path, source: str) -> tuple:
    import duckdb

    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        result = con.execute("SELECT * FROM read_parquet(?)", [str(path)])
        names = tuple(column[0] for column in result.description)
        data = result.fetchall()
    except duckdb.Error as exc:
        _fail(source, "", f"is not a readable Parquet file ({exc})")
    finally:
        con.close()
    rows = [(1, names)]
    rows += [(number, tuple(map(_parquet_value, cells)))
             for number, cells in enumerate(data, start=2)]
    return tuple(rows)


def _parquet_value(value: object) -> object:
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, str) and not value.strip():
        return None
    return value
