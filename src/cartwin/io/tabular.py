"""Research tables in and out: CSV, XLSX and Parquet, long or wide.

Most trial and registry data reaches modellers as spreadsheets. A small TOML
mapping file says what a table holds; :func:`read_tabular` turns the table
into pseudonymised :class:`~cartwin.record.model.PatientRecord` objects
(every value through :func:`~cartwin.record.units.to_canonical`), and
:func:`export_tabular` writes records back as tables.

Formats: CSV (standard library :mod:`csv`), XLSX (``openpyxl``), Parquet
(DuckDB's native reader and writer). The format follows the file suffix.

Mapping file
------------
Top level:

``layout``
    ``"long"`` (one value per row) or ``"wide"`` (one row per patient,
    column groups per visit). Required.
``id_column``
    Header of the patient id column. Required.
``id_kind``
    ``"source"`` (default: ids are hashed with the key before they leave the
    reader) or ``"pseudonym"`` (ids are cartwin pseudonyms, e.g. in a file
    written by :func:`export_tabular`; kept as they are).
``sheet``
    XLSX sheet to read (default: the first); ignored for CSV and Parquet.
``skip_rows``
    Rows above the header (titles); default 0.
``header_rows``
    Header rows; 1 in the long layout, one or more in the wide layout.
``delimiter``, ``encoding``
    CSV only; default ``","`` and ``"utf-8-sig"``.
``decimal``
    Decimal mark of numbers written as text, ``"."`` (default) or ``","``.
``unmapped``
    Long layout: ``"skip"`` (default; rows of quantities not in
    ``[columns]`` are counted in the report) or ``"error"``.

``[time]``:

``anchor``
    ``"date"`` (each value has a date or date-time) or ``"infusion_day"``
    (each value has a day offset from infusion day 0; needs
    ``[events.infusion]``).
``column``
    Long: the column of the date or day offset. Wide, anchor ``date``: the
    header of the date column within each visit group.
``utc_offset_min`` or ``utc_offset_column``
    Site zone as minutes east of UTC (60 for CET), for all rows or per row.
    Needed for times without zone and for dates without time.
``date_format``
    :func:`datetime.datetime.strptime` format of text dates (default ISO 8601).
``default_time``
    Site clock time given to dates without time and to day offsets
    (default ``"12:00"``, which keeps the calendar day under any offset).
``visit_days`` / ``visit_day_pattern``
    Wide, anchor ``infusion_day``: day offset of each visit label, as a table
    (``{ "Baseline" = -5 }``) or a regular expression with a group ``day``
    (``'D(?P<day>-?\\d+)'``).

``[long]``: ``quantity_column``, ``value_column`` (required), ``unit_column``,
``censored_column`` (``below``/``above``/``<``/``>``; a value written as
``<0.5`` is censored too).

``[wide]``: ``visit_row``, ``name_row`` and optional ``unit_row`` (1-based
within the header rows; a visit label carries to the right over blank cells,
as merged cells read), or, with one header row, ``header_pattern``: a regular
expression with groups ``visit``, ``name`` and optional ``unit``.

``[columns.NAME]`` (one per quantity): ``quantity`` (cartwin key from
``quantities.csv``), ``unit`` (UCUM, used when the file gives none), and in
the wide layout ``date_column`` (header of this value's own date column in its
visit group). ``NAME`` is a value of the quantity column (long) or a header
of the name row (wide). ``NAME = "crp"`` is short for ``quantity = "crp"``.

``[events.KIND]`` (``infusion``, ``lymphodepletion``, ... from
:data:`~cartwin.record.model.EVENT_KINDS`): ``start_column`` (required),
``end_column``, ``name_column`` or fixed ``name``, ``dose_column`` with
``dose_unit`` (an infusion dose in ``{cells}`` or ``10*N{cells}``). The
infusion's name becomes the patient's product. Per-patient cells may repeat on
every row of a patient but must agree.

Examples: ``cartwin/data/examples/tabular_long.toml`` and ``tabular_wide.toml``.

Errors
------
Every problem of a table is collected and raised together in a
:class:`~cartwin.io.tabular_problems.TabularImportError` (a
:class:`~cartwin.errors.DataError`) naming file, sheet, row (as a spreadsheet
shows it; the column names of a Parquet file are row 1), column letter and
header, and value; nothing is returned then, so
a bad file never reaches the store. A faulty mapping raises
:class:`~cartwin.io.tabular_problems.TabularMappingError` before the table is
read. Patient ids never appear in messages, records or the report.

Input limits
------------
Only regular files are read, up to ``CARTWIN_MAX_INPUT_BYTES`` bytes (1 GiB
by default; see :mod:`cartwin.io._input`). A table with a header but no data row
(or only blank rows) imports nothing and says so: the report's ``warnings``
holds "no data rows" and a :class:`~cartwin.errors.DataQualityWarning` is
issued, so an empty export does not pass unnoticed. Values pass the checks of
:mod:`cartwin.io._checks` (plausible ranges, CAR T zeros, doses); a
``[columns.NAME]`` may give ``lloq``, the assay's lower limit of
quantification in the canonical unit, so that a CAR T level of 0 is stored as
censored below it.

Known limits
------------
Only the mapped columns are read: patient facts other than the product (age,
sex, diagnosis) are not. Each event kind is one event per patient (a second
infusion needs another table). Day offsets are whole days. Parquet has one
row of column names: a wide Parquet table splits them with ``header_pattern``
(or holds further header rows as its first rows). Formulas in XLSX are read
as their cached results (blank when the file was never saved by a
spreadsheet program).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence, Union

from cartwin.errors import DataError, DataQualityWarning
from cartwin.io._input import InputError, read_bounded
from cartwin.io.tabular_export import (
    long_table,
    mapping_toml,
    wide_table,
    write_csv,
    write_parquet,
    write_xlsx,
)
from cartwin.io.tabular_grid import file_format_of, read_grid
from cartwin.io.tabular_mapping import TabularMapping, load_mapping
from cartwin.io.tabular_problems import (
    CellProblem,
    TabularImportError,
    TabularMappingError,
    TabularUnitError,
)
from cartwin.io.tabular_read import read_table
from cartwin.record.model import PatientRecord
from cartwin.record.pseudonym import pseudonymise

__all__ = [
    "CellProblem",
    "TabularImport",
    "TabularImportError",
    "TabularMapping",
    "TabularMappingError",
    "TabularReport",
    "TabularUnitError",
    "export_tabular",
    "load_mapping",
    "read_tabular",
]

PathLike = Union[str, os.PathLike]


@dataclass(frozen=True)
class TabularReport:
    """What a tabular import read and left out; holds no patient id.

    Attributes
    ----------
    source_name, source_sha256 : str
        File name (patient ids in it replaced by pseudonyms) and SHA-256 of
        its bytes.
    mapping_name, mapping_sha256 : str
        Mapping file name and SHA-256.
    file_format, layout, sheet : str
        ``csv``/``xlsx``/``parquet``; ``long``/``wide``; sheet read (XLSX).
    site_utc_offset_min : int or None
        The mapping's fixed site offset, if it gives one.
    n_rows : int
        Data rows read (after the header rows).
    n_patients, n_observations, n_events : int
        Totals of the produced records.
    quantities : tuple[tuple[str, int], ...]
        Observations per quantity.
    skipped : tuple[tuple[str, int], ...]
        Rows and cells left out on purpose, by reason (blank values, quantities
        the mapping does not map).
    ignored_columns : tuple[str, ...]
        Headers the mapping does not read.
    warnings : tuple[str, ...]
        Things worth a look that did not stop the import (e.g. no data rows).
    """

    source_name: str
    source_sha256: str
    mapping_name: str
    mapping_sha256: str
    file_format: str
    layout: str
    sheet: str
    site_utc_offset_min: int | None
    n_rows: int
    n_patients: int
    n_observations: int
    n_events: int
    quantities: tuple[tuple[str, int], ...]
    skipped: tuple[tuple[str, int], ...]
    ignored_columns: tuple[str, ...]
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        """JSON-serialisable form (for the store's import log)."""
        out = dict(vars(self))
        out["quantities"] = dict(self.quantities)
        out["skipped"] = dict(self.skipped)
        out["ignored_columns"] = list(self.ignored_columns)
        out["warnings"] = list(self.warnings)
        return out


@dataclass(frozen=True)
class TabularImport:
    """Result of :func:`read_tabular`.

    Attributes
    ----------
    records : tuple[PatientRecord, ...]
        One record per patient, in order of first appearance.
    report : TabularReport
    source_name : str
        File name, patient ids in it replaced by their pseudonyms.
    source_sha256 : str
        SHA-256 of the file's hash joined with the mapping's hash: the store's
        import identity (the file's own hash is in ``report.source_sha256``).
    """

    records: tuple[PatientRecord, ...]
    report: TabularReport
    source_name: str
    source_sha256: str


def read_tabular(
    path: PathLike,
    mapping_path: PathLike | TabularMapping,
    *,
    key: bytes,
    file_format: str | None = None,
) -> TabularImport:
    """Read a CSV, XLSX or Parquet table into pseudonymised patient records.

    Parameters
    ----------
    path : path
        The table; the format follows the suffix (``.csv``/``.tsv``/``.txt``,
        ``.xlsx``/``.xlsm``, ``.parquet``/``.pq``) unless ``file_format`` says.
    mapping_path : path or TabularMapping
        The TOML mapping (see the module docstring), or one already loaded.
    key : bytes
        Pseudonymisation key (:func:`cartwin.record.pseudonym.load_key`).
    file_format : {"csv", "xlsx", "parquet"}, optional
        Overrides the suffix.

    Returns
    -------
    TabularImport
        Records ready for :meth:`cartwin.store.TwinStore.import_records`.

    Raises
    ------
    TabularMappingError
        When the mapping is unreadable or inconsistent.
    TabularImportError
        Listing every problem of the table (:class:`TabularUnitError`, also a
        :class:`~cartwin.errors.UnitError`, when all are unit problems).
    DataError
        When ``key`` is not non-empty bytes.
    """
    if not isinstance(key, (bytes, bytearray)) or not key:
        raise DataError("key must be non-empty bytes (see cartwin.record.pseudonym)")
    mapping = mapping_path if isinstance(mapping_path, TabularMapping) \
        else load_mapping(mapping_path)
    path = Path(path)
    fmt = file_format_of(path, file_format)
    raw = _read_bytes(path)
    grid = read_grid(path, raw, fmt, source=path.name, sheet=mapping.sheet,
                     delimiter=mapping.delimiter, encoding=mapping.encoding)
    contents = read_table(grid, mapping, bytes(key))
    name = _redact(path.name, contents.source_ids, mapping, bytes(key))
    digest = hashlib.sha256(raw).hexdigest()
    report = TabularReport(
        source_name=name, source_sha256=digest, mapping_name=mapping.source,
        mapping_sha256=mapping.sha256, file_format=fmt, layout=mapping.layout,
        sheet=grid.sheet, site_utc_offset_min=mapping.time.utc_offset_min,
        n_rows=contents.n_rows, n_patients=len(contents.records),
        n_observations=sum(len(r.observations) for r in contents.records),
        n_events=sum(len(r.events) for r in contents.records),
        quantities=_quantities(contents.records), skipped=contents.skipped,
        ignored_columns=contents.ignored_columns,
        warnings=_warnings(name, contents.n_rows, len(contents.records)),
    )  # fmt: skip
    # The store's idempotence key covers the table AND its mapping: the same
    # table re-read with a corrected mapping is a new import, not a repeat.
    import_digest = hashlib.sha256(f"{digest}:{mapping.sha256}".encode()).hexdigest()
    return TabularImport(contents.records, report, name, import_digest)


def _read_bytes(path: Path) -> bytes:
    try:
        return read_bounded(path, path.name)
    except InputError as exc:
        raise TabularImportError([CellProblem(exc.code, path.name, exc.detail)]) \
            from None


def _warnings(name: str, n_rows: int, n_patients: int) -> tuple[str, ...]:
    if n_patients:
        return ()
    what = "no data rows (header rows only)" if not n_rows else "only blank rows"
    message = f"{name}: {what}; nothing was imported"
    warnings.warn(message, DataQualityWarning, stacklevel=3)
    return (message,)


def _redact(name: str, source_ids: Sequence[str], mapping: TabularMapping,
            key: bytes) -> str:
    if mapping.id_kind != "source":
        return name
    for source_id in sorted(source_ids, key=len, reverse=True):
        if len(source_id) >= 3 and source_id in name:
            name = name.replace(source_id, pseudonymise(source_id, key))
    return name


def _quantities(records: Sequence[PatientRecord]) -> tuple[tuple[str, int], ...]:
    counts: dict[str, int] = {}
    for record in records:
        for quantity, count in record.quantities().items():
            counts[quantity] = counts.get(quantity, 0) + count
    return tuple(sorted(counts.items()))


def export_tabular(
    records: PatientRecord | Iterable[PatientRecord] | object,
    path: PathLike,
    *,
    layout: str = "long",
    file_format: str | None = None,
    mapping_path: PathLike | None = None,
    patients: Sequence[str] | None = None,
    sheet: str = "cartwin",
) -> Path:
    """Write patient records as a long or wide CSV, XLSX or Parquet table.

    Parameters
    ----------
    records : PatientRecord, iterable of PatientRecord, or TwinStore
        What to write; a store (anything with ``persons()`` and
        ``load_record()``) gives all its patients, or those in ``patients``.
    path : path
        Output file; replaced atomically (a failed export leaves no file).
    layout : {"long", "wide"}
        See :mod:`cartwin.io.tabular_export` for the columns of each.
    file_format : {"csv", "xlsx", "parquet"}, optional
        Overrides the suffix of ``path``.
    mapping_path : path, optional
        Also write the TOML mapping that reads the table back with
        :func:`read_tabular` (``id_kind = "pseudonym"``).
    patients : sequence of str, optional
        Pseudonyms to export from a store (default: all).
    sheet : str
        XLSX sheet name.

    Returns
    -------
    pathlib.Path
        The written table.

    Raises
    ------
    DataError
        For an unknown layout or format, or, in the wide layout, a patient
        without infusion (no study day) or no observation at all.
    """
    if layout not in ("long", "wide"):
        raise DataError(f"layout {layout!r}: allowed 'long' or 'wide'")
    path = Path(path)
    try:
        fmt = file_format_of(path, file_format)
    except TabularImportError as exc:
        raise DataError(f"cannot export: {exc.problems[0]}") from None
    chosen = _records(records, patients)
    table = long_table(chosen) if layout == "long" else wide_table(chosen)
    if layout == "wide" and not table.quantities:
        raise DataError("no observation to write: the wide layout needs at least one")
    _write_atomically(path, lambda tmp: _write(table, tmp, fmt, sheet))
    if mapping_path is not None:
        text = mapping_toml(table, layout, fmt, sheet)
        _write_atomically(Path(mapping_path),
                          lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return path


def _records(source, patients: Sequence[str] | None) -> list[PatientRecord]:
    if isinstance(source, PatientRecord):
        return [source]
    if hasattr(source, "persons") and hasattr(source, "load_record"):
        chosen = patients or [p.pseudonym for p in source.persons()]
        return [source.load_record(pseudonym) for pseudonym in chosen]
    records = list(source)
    for record in records:
        if not isinstance(record, PatientRecord):
            raise DataError(f"expected PatientRecord objects, got "
                            f"{type(record).__name__}")
    if patients is not None:
        records = [r for r in records if r.facts.pseudonym in set(patients)]
    return records


def _write(table, target: Path, fmt: str, sheet: str) -> None:
    if fmt == "csv":
        with target.open("w", encoding="utf-8", newline="") as handle:
            write_csv(table, handle)
    elif fmt == "xlsx":
        write_xlsx(table, target, sheet)
    else:
        write_parquet(table, str(target))


def _write_atomically(path: Path, write) -> None:
    folder = path.parent if str(path.parent) else Path(".")
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", dir=folder)
    os.close(handle)
    tmp = Path(name)
    try:
        tmp.unlink()
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
