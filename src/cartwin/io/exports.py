"""Write a patient's twin outputs in the format a user's system reads.

One entry point for ``cartwin export``: FHIR R4 transaction Bundle, GA4GH
Phenopacket, OMOP CDM rows (CSV folder or DuckDB file), an RO-Crate that
reproduces the twin version, or the patient's data as a long/wide table
(CSV, XLSX, Parquet). Files are written to a temporary name and moved into
place, so a failed export leaves no half-written file behind.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from cartwin.errors import DataError
from cartwin.record.model import PatientRecord
from cartwin.twin.version import TwinVersion

#: Formats ``cartwin export --format`` writes.
EXPORT_FORMATS = ("fhir", "phenopacket", "omop", "omop-duckdb", "ro-crate",
                  "csv", "xlsx", "parquet")


def export_patient(
    record: PatientRecord,
    version: TwinVersion,
    fmt: str,
    dest: Path,
    *,
    layout: str = "long",
) -> dict[str, Any]:
    """Export ``record`` and its twin ``version`` as ``fmt`` to ``dest``.

    Returns
    -------
    dict
        ``format``, ``path`` and format-specific counts, for ``--json``.
    """
    dest = Path(dest)
    if fmt in ("fhir", "phenopacket", "csv", "xlsx", "parquet") and dest.is_dir():
        raise DataError(f"{fmt} export goes to a file, but {dest} is a folder")
    if fmt in ("fhir", "phenopacket"):
        document = _document(record, version, fmt)
        _write_atomic(dest, json.dumps(document, indent=1, sort_keys=False) + "\n")
        return {"format": fmt, "path": str(dest), **_document_counts(document, fmt)}
    if fmt in ("omop", "omop-duckdb"):
        from cartwin.io.omop_export import export_omop

        result = export_omop(
            record, version, dest, format="duckdb" if fmt == "omop-duckdb" else "csv"
        )
        return {"format": fmt, "path": str(dest), "result": _plain(result)}
    if fmt == "ro-crate":
        from cartwin.io.rocrate import export_rocrate

        path = export_rocrate(record, version, dest)
        return {"format": fmt, "path": str(path)}
    if fmt in ("csv", "xlsx", "parquet"):
        from cartwin.io.tabular import export_tabular

        with _staging(dest) as tmp:
            export_tabular(record, tmp, layout=layout, file_format=fmt)
        return {"format": fmt, "layout": layout, "path": str(dest)}
    raise DataError(f"unknown export format {fmt!r}; use one of {', '.join(EXPORT_FORMATS)}")


def _document(record: PatientRecord, version: TwinVersion, fmt: str) -> dict:
    if fmt == "fhir":
        from cartwin.io.fhir_export import export_fhir

        return export_fhir(record, version)
    from cartwin.io.phenopacket import export_phenopacket

    return export_phenopacket(record, version)


def _document_counts(document: dict, fmt: str) -> dict[str, Any]:
    if fmt != "fhir":
        return {}
    counts: dict[str, int] = {}
    for entry in document.get("entry", []):
        rtype = entry["resource"]["resourceType"]
        counts[rtype] = counts.get(rtype, 0) + 1
    return {"resources": counts}


def _plain(result: Any) -> Any:
    if hasattr(result, "to_dict"):
        return result.to_dict()
    return str(result)


def _write_atomic(dest: Path, text: str) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, dest)


class _staging:
    """Context manager giving a temporary path that replaces ``dest`` on success."""

    def __init__(self, dest: Path) -> None:
        self.dest = dest
        self.folder = Path(tempfile.mkdtemp(dir=dest.parent if dest.parent.exists() else None))
        self.tmp = self.folder / dest.name

    def __enter__(self) -> Path:
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self.dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(self.tmp, self.dest)
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)
