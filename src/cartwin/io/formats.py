"""Recognise an input's format and read it with the right adapter.

``cartwin import`` accepts FHIR (Bundle, single resource, NDJSON; plain, gzip
or bzip2), GA4GH Phenopackets v2 JSON, OMOP CDM sources (a DuckDB file, a
folder of CSV tables, or a ``postgresql://`` URL) and tabular research files
(CSV, XLSX, Parquet with a TOML mapping). Every adapter returns an object with
``records``, ``report`` (with ``to_dict()``), ``source_name`` and
``source_sha256``, and writes nothing: the store import is the one transaction.
"""

from __future__ import annotations

import bz2
import gzip
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

    try:
        document = json.loads(_head(path, size=-1))
    except ValueError:
        return False
    return isinstance(document, dict) and is_phenopacket(document)


def _head(path: Path, size: int = 65536) -> str:
    opener = {".gz": gzip.open, ".bz2": bz2.open}.get(path.suffix.lower(), open)
    try:
        with opener(path, "rb") as handle:
            return handle.read(size).decode("utf-8", errors="replace")
    except OSError as exc:
        raise DataError(f"{path.name}: cannot be read ({exc})") from None


def read_source(
    source: str | Path, fmt: str | None, *, key: bytes, options: ReadOptions
) -> Any:
    """Read ``source`` in format ``fmt`` (detected when ``None``)."""
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
