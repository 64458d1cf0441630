"""Recognise an input's format and read it with the right adapter.

``cartwin import`` accepts FHIR (Bundle, single resource, NDJSON; plain, gzip
or bzip2), GA4GH Phenopackets v2 JSON, OMOP CDM sources (a DuckDB file, a
folder of CSV tables, or a ``postgresql://`` URL) and tabular research files
(CSV, XLSX, Parquet with a TOML mapping). Every adapter returns an object with
``records``, ``report`` (with ``to_dict()``), ``source_name`` and
``source_sha256``, and writes nothing: the store import is the one transaction.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cartwin.errors import DataError

#: Formats ``cartwin import --format`` accepts.
FORMATS = ("fhir", "phenopacket", "omop", "tabular")
_TABULAR_SUFFIXES = (".csv", ".tsv", ".xlsx", ".parquet")


@dataclass(frozen=True)
class ReadOptions:
    """Options of the adapters; each adapter uses the ones that apply to it."""

    site_utc_offset_min: int | None = None
    codes: Path | None = None
    mapping: Path | None = None
    omop_schema: str | None = None


_FHIR_FILE_SUFFIXES = (".json", ".ndjson", ".gz", ".bz2")
_OMOP_MARKERS = ("person.csv", "measurement.csv")


def expand_sources(sources: list[str], fmt: str | None) -> list[str]:
    """Replace each folder of FHIR files by its files (sorted); OMOP folders stay.

    A folder is an OMOP CDM when it holds a ``person`` or ``measurement`` CSV
    table (any case) or when ``fmt`` is ``"omop"``; otherwise its ``.json``,
    ``.ndjson`` (optionally ``.gz``/``.bz2``) files are imported one by one,
    each as its own transaction.
    """
    expanded = []
    for source in sources:
        path = Path(source)
        if not path.is_dir() or fmt == "omop" or _is_omop_folder(path):
            expanded.append(source)
            continue
        files = sorted(
            str(p) for p in path.iterdir()
            if p.is_file() and p.name.lower().endswith(_FHIR_FILE_SUFFIXES)
        )
        if not files:
            raise DataError(
                f"folder {path.name} holds neither OMOP CDM tables (person.csv, "
                "measurement.csv) nor FHIR files (.json, .ndjson, .gz, .bz2)"
            )
        expanded.extend(files)
    return expanded


def _is_omop_folder(path: Path) -> bool:
    names = {p.name.lower() for p in path.iterdir()}
    return any(marker in names for marker in _OMOP_MARKERS)


def detect_format(source: str | Path, *, mapping: Path | None = None) -> str:
    """Name the format of ``source`` from its location and first bytes.

    Raises
    ------
    DataError
        When the format cannot be recognised; the message says how to force it.
    """
    text = str(source)
    if text.startswith(("postgresql://", "postgres://")):
        return "omop"
    path = Path(source)
    if path.is_dir() or path.suffix.lower() == ".duckdb":
        return "omop"
    if path.suffix.lower() in _TABULAR_SUFFIXES or mapping is not None:
        return "tabular"
    head = _head(path)
    if '"resourceType"' in head:
        return "fhir"
    if _is_phenopacket(path):
        return "phenopacket"
    raise DataError(
        f"{path.name}: cannot tell the format (not FHIR, Phenopacket, OMOP or a "
        f"table); use --format with one of {', '.join(FORMATS)}"
    )


def _is_phenopacket(path: Path) -> bool:
    from cartwin.io.phenopacket import is_phenopacket

    from cartwin.io._input import check_json_depth

    text = _head(path, size=-1)
    check_json_depth(text.encode("utf-8"), path.name)
    try:
        document = json.loads(text)
    except ValueError:
        return False
    return isinstance(document, dict) and is_phenopacket(document)


def _head(path: Path, size: int = 65536) -> str:
    """First ``size`` bytes (all when negative), decompressed and size-bounded."""
    from cartwin.io._input import read_head

    return read_head(path, path.name, None if size < 0 else size).decode(
        "utf-8", errors="replace"
    )


@dataclass(frozen=True)
class SourceImport:
    """What an adapter read, made safe to store.

    Source resource/row ids are replaced by keyed hashes
    (:func:`cartwin.record.pseudonym.source_token`) and the import identity is
    a keyed hash of the adapter's content hash, so neither can be matched
    against the source system or a published file checksum without the key.
    """

    records: tuple
    report: Any
    source_name: str
    source_sha256: str


def read_source(
    source: str | Path, fmt: str | None, *, key: bytes, options: ReadOptions
) -> SourceImport:
    """Read ``source`` in format ``fmt`` (detected when ``None``), ready to store."""
    import hashlib
    import hmac

    from cartwin.record.pseudonym import pseudonymise_sources

    parsed = _read_raw(source, fmt, key=key, options=options)
    records = tuple(pseudonymise_sources(r, key) for r in parsed.records)
    keyed = hmac.new(key, parsed.source_sha256.encode(), hashlib.sha256).hexdigest()
    report = _KeyedReport(parsed.report.to_dict(), keyed)
    return SourceImport(records, report, parsed.source_name, keyed)


class _KeyedReport:
    """An adapter's report with its raw content hash replaced by the keyed one."""

    def __init__(self, data: dict, keyed_sha256: str) -> None:
        self._data = {**data, "source_sha256": keyed_sha256}

    def to_dict(self) -> dict:
        return dict(self._data)


def _read_raw(
    source: str | Path, fmt: str | None, *, key: bytes, options: ReadOptions
) -> Any:
    fmt = fmt or detect_format(source, mapping=options.mapping)
    if fmt == "fhir":
        from cartwin.io.fhir import import_fhir

        return import_fhir(
            source,
            key=key,
            site_utc_offset_min=options.site_utc_offset_min,
            extra_codes=options.codes,
        )
    if fmt == "phenopacket":
        from cartwin.io.phenopacket import read_phenopacket

        return read_phenopacket(
            source,
            key=key,
            site_utc_offset_min=options.site_utc_offset_min,
            extra_codes=options.codes,
        )
    if fmt == "omop":
        from cartwin.io.omop import read_omop

        return read_omop(
            source,
            key=key,
            schema=options.omop_schema,
            site_utc_offset_min=options.site_utc_offset_min or 0,
        )
    if fmt == "tabular":
        from cartwin.io.tabular import read_tabular

        if options.mapping is None:
            raise DataError(
                f"{Path(source).name}: a table needs a mapping file (--mapping MAP.toml; "
                "see src/cartwin/data/examples/tabular_long.toml)"
            )
        return read_tabular(source, options.mapping, key=key)
    raise DataError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
