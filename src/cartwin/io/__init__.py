"""Readers of clinical data into :class:`cartwin.record.PatientRecord`.

FHIR R4 JSON (bundles, single resources, NDJSON; gzip/bzip2) is read by
:func:`import_fhir`. Codes are mapped through the shipped table
``cartwin/data/codes/codes.csv``, which a site extends with its own CSV files
(:func:`load_code_map`, environment variable ``CARTWIN_CODE_MAP``).

The other adapters live in their own modules and are imported on use, so a
FHIR-only user does not load their dependencies: :mod:`cartwin.io.omop`
(``read_omop``, ``export_omop``), :mod:`cartwin.io.phenopacket`
(``read_phenopacket``, ``export_phenopacket``), :mod:`cartwin.io.tabular`
(``read_tabular``, ``export_tabular``), :mod:`cartwin.io.fhir_export`
(``export_fhir``), :mod:`cartwin.io.rocrate` (``export_rocrate``,
``reproduce_rocrate``); :mod:`cartwin.io.formats` recognises a source's format
and :mod:`cartwin.io.exports` writes any export format.
"""

from __future__ import annotations

from cartwin.io.codes import CodeMap, CodeMapError, CodeMapping, load_code_map
from cartwin.io.fhir import FHIR_RELEASE, FhirImport, import_fhir
from cartwin.io.problems import FhirImportError, FhirUnitError, Problem
from cartwin.io.report import CodingCount, ImportReport, ResourceCount

__all__ = [
    "FHIR_RELEASE",
    "CodeMap",
    "CodeMapError",
    "CodeMapping",
    "CodingCount",
    "FhirImport",
    "FhirImportError",
    "FhirUnitError",
    "ImportReport",
    "Problem",
    "ResourceCount",
    "import_fhir",
    "load_code_map",
]
