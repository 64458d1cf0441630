"""GA4GH Phenopackets v2 in and out: patient records and twin summaries.

:func:`read_phenopacket` reads a Phenopacket (or a Cohort or Family of them)
in the schema's JSON form, validates it by parsing it into the ``phenopackets``
protobuf classes (``google.protobuf.json_format.ParseDict``), and maps it to
pseudonymised :class:`~cartwin.record.model.PatientRecord` objects.
:func:`export_phenopacket` writes one patient and the summary of one twin
version as a phenopacket and validates it the same way.

What is read
------------
- ``subject``: ``id`` (pseudonymised; an id written by the exporter,
  ``cartwin.pseudonym:<16 hex>``, is already a pseudonym and is kept), ``sex``,
  and the age in whole years: from ``dateOfBirth`` at the local day of CAR T
  infusion (else of the last data point) when given, else from
  ``timeAtLastEncounter.age.iso8601duration``. No date of birth is kept.
- ``diseases``: disease group (rules below); the first non-excluded disease of
  group LBCL, MM or B-ALL, else of ``other``, becomes the diagnosis.
  Non-malignant diseases are counted and skipped, as FHIR Conditions are.
- ``measurements``: ``assay`` through the code table to a quantity; the value
  ``value.quantity`` with its unit (``UCUM:<code>``, or a UO / NCIT unit id of
  :data:`UNIT_IDS`) converted by :func:`~cartwin.record.units.to_canonical`;
  time ``timeObserved.timestamp`` (or ``interval.start``, as the FHIR
  importer reads ``effectivePeriod.start``).
- ``medicalActions``: a ``treatment`` gives one event per ``doseIntervals``
  element (agent through the code table; dose and its unit; interval start and
  end); a ``procedure`` gives one event (``performed`` timestamp or interval).
  Oxygen given at a pressure (a dose in ``cm[H2O]`` or another pressure unit,
  as for PEEP) is positive-pressure support (detail ``positive_pressure``,
  ASTCT CRS grade 4 hypoxia).
- ``phenotypicFeatures``: the ICANS findings cartwin grades (seizure, cerebral
  edema, deep focal motor weakness as HPO terms), as events at their onset.
  Every other feature is counted in the report.
- ``biosamples``, ``interpretations``, ``files``: counted, not read.

A time given as an age, age range, gestational age or ontology class (onset
"congenital") has no instant without the date of birth, which cartwin does not
keep: such elements are skipped with that reason. A measurement whose unit is
not UCUM or a listed UO / NCIT unit is skipped with the unit named; a UCUM
unit of the wrong dimension is an error, as in the FHIR importer.

Codes
-----
Ontology ids are CURIEs. Prefixes in :data:`CURIE_SYSTEMS` are turned into the
FHIR system URIs of the code table (``LOINC:718-7`` is ``http://loinc.org``
code ``718-7``; OBO ontologies keep the prefix in the code, ``HP:0001250``);
other prefixes are resolved through ``metaData.resources`` (``url``).
A coding is looked up in the code table (shipped, environment and site tables,
:func:`cartwin.io.codes.load_code_map`), then in :data:`PHENOPACKET_CODES`
(NCIT, HPO and MONDO terms met in phenopackets), then by its label: a label
equal (case and spacing aside) to the ``display`` of exactly one target of the
right kind is used, which is how DrugCentral or free agents named
"tocilizumab" are recognised.

Disease group of a term, in order: a ``diagnosis`` row; ICD-10 C-codes
(:mod:`cartwin.io._disease`); a label naming a T-cell ALL gives ``other``;
the label rules of :mod:`cartwin.io._disease` ("large b-cell", "myeloma",
"lymphoblastic"); a label naming a malignancy (lymphoma, leukemia, carcinoma,
sarcoma, melanoma, ...) gives ``other``.

What a phenopacket cannot carry
-------------------------------
Written by :func:`export_phenopacket` and read back by
:func:`read_phenopacket`, every field cartwin reads survives except:

- ``Observation.source_value`` / ``source_unit``: a measurement has one value,
  so the canonical value and unit are written and read back as the source.
- censoring: phenopackets have no comparator. The exporter writes the limit
  as the value and ``censored=below`` (or ``above``) in the measurement
  ``description``; this reader honours that token, other readers see an exact
  value. The same description carries ``source_id=<id>``.
- ``Event.source_id``: medical actions have no id or free text; read back as
  the element's location (``medicalActions[2].doseIntervals[0]``).
- events with ``detail="requested"`` (orders, not administrations) are not
  written: a phenopacket treatment cannot say "requested" and reading it back
  as given would be wrong (an ordered infusion would become day 0).
- an instantaneous event (``end`` ``None``) is written as a dose interval of
  zero length and read back with ``end`` ``None``.
- ``PatientRecord.site_utc_offset_min``: not written; give it to the reader.
  Each timestamp keeps its own UTC offset in the JSON text.
- the age is written as ``timeAtLastEncounter`` although cartwin holds the
  age at infusion: the schema has no field for an age at a chosen instant.

Checks
------
As in the other readers (:mod:`cartwin.io._checks`): values outside the
plausible range of their quantity, CAR T levels of exactly 0 (censored below
the code's ``lloq`` when the code map gives one, else refused), infusion doses
outside 1e5-1e11 cells, ages outside 0-120 years and timestamps outside the
years 1900-2199 are problems. Event names are the code table's display (the
term's label only when the table gives none), a diagnosis keeps the label of
its term (never free text); labels pass
:func:`~cartwin.io._checks.clean_text`. Inputs are limited in size
(:mod:`cartwin.io._input`), integer literals longer than 30 digits read as
infinity (a non-finite value), and JSON nested too deep is the problem
``nesting-too-deep``.

Twin outputs (forecast Cmax, Tmax, AUC0-28 with the interval in
``referenceRange``, scores, CRS and ICANS maximum grades) are written as
measurements with ``CARTWIN.TWIN`` assays; the reader skips them as outputs,
not data.

References
----------
Jacobsen JOB, Baudis M, Baynam GS, et al. The GA4GH Phenopacket schema
defines a computable representation of clinical data. Nat Biotechnol
2022;40:817-820. doi:10.1038/s41587-022-01357-4
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import phenopackets as pps
from google.protobuf.json_format import ParseDict, ParseError

from cartwin import __version__
from cartwin.errors import DataError, DataQualityWarning, UnitError
from cartwin.io._checks import (
    age_finding,
    clean_text,
    dose_finding,
    finite_number,
    instant_finding,
    undetected,
    value_finding,
)
from cartwin.io._disease import coding_group, text_group
from cartwin.io._input import InputError, check_json_depth, read_bounded
from cartwin.io._source import MAX_INT_DIGITS
from cartwin.io.codes import CodeMap, CodeMapping, CodeMapSource, load_code_map
from cartwin.io.problems import Problem
from cartwin.io.report import CodingCount, ResourceCount, Tally
from cartwin.record.model import Event, Observation, PatientFacts, PatientRecord
from cartwin.record.pseudonym import looks_like_pseudonym, pseudonymise
from cartwin.record.units import canonical_unit, to_canonical
from cartwin.twin.version import TwinVersion

#: Schema version :func:`export_phenopacket` writes.
SCHEMA_VERSION = "2.0"
#: Subject ids of this form are cartwin pseudonyms and are kept as they are.
PSEUDONYM_ID_PREFIX = "cartwin.pseudonym:"
#: CURIE prefix of twin outputs written as measurements (skipped on import).
TWIN_PREFIX = "CARTWIN.TWIN"

Source = Union[str, os.PathLike, bytes]

#: CURIE prefixes: ``PREFIX|FHIR system URI|code keeps the prefix (1/0)|name``.
CURIE_TABLE = """\
LOINC|http://loinc.org|0|Logical Observation Identifiers Names and Codes
SNOMED|http://snomed.info/sct|0|SNOMED CT
SNOMEDCT|http://snomed.info/sct|0|SNOMED CT
SCTID|http://snomed.info/sct|0|SNOMED CT
RXNORM|http://www.nlm.nih.gov/research/umls/rxnorm|0|RxNorm
NCIT|http://ncithesaurus-stage.nci.nih.gov|0|NCI Thesaurus
HP|http://human-phenotype-ontology.org|1|Human Phenotype Ontology
MONDO|http://purl.obolibrary.org/obo/mondo.owl|1|Mondo Disease Ontology
ICD10|http://hl7.org/fhir/sid/icd-10|0|ICD-10
ICD10CM|http://hl7.org/fhir/sid/icd-10-cm|0|ICD-10-CM
UCUM|http://unitsofmeasure.org|0|Unified Code for Units of Measure
UO|http://purl.obolibrary.org/obo/uo.owl|1|Units of Measurement Ontology
CARTWIN|https://cartwin.org/fhir/CodeSystem/local|0|cartwin local codes
CARTWIN.TWIN|https://cartwin.org/fhir/CodeSystem/twin-output|0|cartwin twin outputs
"""
#: CURIE prefix -> (FHIR system URI, whether the code keeps the prefix, name).
CURIE_SYSTEMS: dict[str, tuple[str, bool, str]] = {
    prefix: (system, keep == "1", name)
    for prefix, system, keep, name in (
        line.split("|") for line in CURIE_TABLE.splitlines()
    )
}
_SYSTEM_PREFIX: dict[str, str] = {}
for _prefix, (_system, _, _) in CURIE_SYSTEMS.items():
    _SYSTEM_PREFIX.setdefault(_system, _prefix)

#: Unit ids that are not ``UCUM:`` CURIEs, with their UCUM code.
UNIT_IDS = {
    "UO:0000009": "kg",
    "UO:0000021": "g",
    "UO:0000022": "mg",
    "UO:0000023": "ug",
    "UO:0000027": "Cel",
    "UO:0000187": "%",
    "NCIT:C28253": "mg",
    "NCIT:C67388": "L/min",
    "NCIT:C91060": "cm[H2O]",
}

#: Codes met in phenopackets that the shipped table lacks, in the columns of
#: ``codes.csv`` with a CURIE for ``system,code`` (a candidate for that table).
PHENOPACKET_CODES = """\
LOINC:26474-7|observation|alc|Lymphocytes [#/volume] in Blood
NCIT:C113237|observation|alc|Absolute Blood Lymphocyte Count
NCIT:C84217|event|tocilizumab|Tocilizumab
NCIT:C722|event|oxygen|Oxygen
HP:0001250|event|seizure|Seizure
HP:0002181|event|cerebral_edema|Cerebral edema
HP:0001269|event|motor_weakness|Hemiparesis
HP:0002385|event|motor_weakness|Paraparesis
NCIT:C8851|diagnosis|LBCL|Diffuse Large B-Cell Lymphoma
NCIT:C80280|diagnosis|LBCL|Diffuse Large B-Cell Lymphoma, Not Otherwise Specified
NCIT:C3242|diagnosis|MM|Plasma Cell Myeloma
NCIT:C8936|diagnosis|B-ALL|B Lymphoblastic Leukemia/Lymphoma
MONDO:0018906|diagnosis|LBCL|diffuse large B-cell lymphoma
MONDO:0009693|diagnosis|MM|multiple myeloma
"""


def _extra_rows() -> dict[tuple[str, str], CodeMapping]:
    rows = {}
    for line_no, line in enumerate(PHENOPACKET_CODES.splitlines(), start=1):
        curie, target_type, target, display = line.split("|")
        system, code = curie_to_coding(curie)
        origin = f"cartwin.io.phenopacket.PHENOPACKET_CODES:{line_no}"
        rows[(system, code)] = CodeMapping(
            system, code, target_type, target, display, origin
        )
    return rows


_MALIGNANT_WORDS = (
    "lymphoma",
    "leukemia",
    "leukaemia",
    "myeloma",
    "carcinoma",
    "sarcoma",
    "melanoma",
    "blastoma",
    "malignant",
    "cancer",
)
_T_ALL = re.compile(r"\bt[- ]?(cell )?(acute )?lymphoblastic", re.IGNORECASE)
_FINDING_KINDS = ("seizure", "consciousness", "cerebral_edema", "motor_weakness")
_DRUG_KINDS = (
    "bridging",
    "lymphodepletion",
    "infusion",
    "tocilizumab",
    "corticosteroid",
    "vasopressor",
    "antipyretic",
)
_SEX_IN = {
    "FEMALE": "female",
    "MALE": "male",
    "OTHER_SEX": "other",
    "UNKNOWN_SEX": "unknown",
}
_SEX_OUT = {v: k for k, v in _SEX_IN.items()}
_AGE_KINDS = ("age", "ageRange", "gestationalAge", "ontologyClass")
_DURATION = re.compile(
    r"^P(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)W)?(?:(\d+)D)?(?:T[\d.HMS]*)?$"
)
_CELLS = re.compile(r"^(?:10\*(\d{1,2}))?\{cells?\}$")
_CENSORED = re.compile(r"\bcensored=(below|above)\b")
_SOURCE_ID = re.compile(r"\bsource_id=([^;\s]+)")
_NOT_READ = ("biosamples", "interpretations", "files")


class PhenopacketError(DataError):
    """A phenopacket file could not be read; ``problems`` lists every reason."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = tuple(problems)
        lines = [f"{len(self.problems)} problem(s) in {self.problems[0].source}:"]
        lines += [f"  {p}" for p in self.problems[:50]]
        super().__init__("\n".join(lines))


@dataclass(frozen=True)
class PhenopacketReport:
    """What an import read, used and skipped (no patient identifiers).

    Attributes
    ----------
    source_name, source_sha256 : str
        File name and SHA-256 of its bytes.
    schema_version : str
        ``metaData.phenopacketSchemaVersion`` of the (first) phenopacket.
    validation : str
        How the file was validated.
    code_maps : tuple of str
        Code tables in force.
    elements : tuple of ResourceCount
        Per top-level element (``measurements``, ``diseases``, ...): read,
        used, skipped with reasons.
    codings : tuple of CodingCount
        Every ontology class seen, recognised or not.
    n_patients, n_observations, n_events : int
    quantities : tuple of (str, int)
    """

    source_name: str
    source_sha256: str
    schema_version: str
    validation: str
    code_maps: tuple[str, ...]
    elements: tuple[ResourceCount, ...]
    codings: tuple[CodingCount, ...]
    n_patients: int
    n_observations: int
    n_events: int
    quantities: tuple[tuple[str, int], ...]

    def element(self, name: str) -> ResourceCount:
        """Counts of one element (zeros when none was read)."""
        for row in self.elements:
            if row.resource_type == name:
                return row
        return ResourceCount(name, 0, 0, ())

    def to_dict(self) -> dict:
        """JSON-serialisable form."""
        return {
            "source_name": self.source_name,
            "source_sha256": self.source_sha256,
            "schema_version": self.schema_version,
            "validation": self.validation,
            "code_maps": list(self.code_maps),
            "totals": {
                "patients": self.n_patients,
                "observations": self.n_observations,
                "events": self.n_events,
            },
            "quantities": dict(self.quantities),
            "elements": {
                r.resource_type: {
                    "read": r.read,
                    "used": r.used,
                    "skipped": dict(r.skipped),
                }
                for r in self.elements
            },
            "codings": [vars(c).copy() for c in self.codings],
        }


@dataclass(frozen=True)
class PhenopacketImport:
    """Result of :func:`read_phenopacket`: records, report and file identity."""

    records: tuple[PatientRecord, ...]
    report: PhenopacketReport
    source_name: str
    source_sha256: str


class _Skip(Exception):
    """An element is not used; ``args[0]`` is the reason counted."""


@dataclass(frozen=True, order=True)
class _Diagnosis:
    """A disease naming a group; the smallest (CAR T group, onset, order) wins."""

    is_other: bool
    onset: str
    order: int
    group: str = field(compare=False)
    display: str | None = field(compare=False)
    code: str | None = field(compare=False)


@dataclass
class _Patient:
    observations: list[Observation] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    diagnoses: list[_Diagnosis] = field(default_factory=list)


# -- import ---------------------------------------------------------------------
def read_phenopacket(
    path_or_bytes: Source,
    *,
    key: bytes,
    site_utc_offset_min: int | None = None,
    extra_codes: CodeMapSource | None = None,
    source_name: str | None = None,
) -> PhenopacketImport:
    """Read a GA4GH Phenopacket v2 JSON file into pseudonymised records.

    Parameters
    ----------
    path_or_bytes : path or bytes
        A Phenopacket, Cohort or Family in JSON.
    key : bytes
        Pseudonymisation key (:func:`cartwin.record.pseudonym.load_key`).
    site_utc_offset_min : int, optional
        Stored as the records' site offset (phenopacket timestamps always
        carry a zone, so it is not needed to read them).
    extra_codes : path, sequence of paths or CodeMap, optional
        Site code tables (see :func:`cartwin.io.codes.load_code_map`).
    source_name : str, optional
        Name used in messages; defaults to the file name.

    Returns
    -------
    PhenopacketImport
        One record per phenopacket, in file order.

    Raises
    ------
    PhenopacketError
        A :class:`~cartwin.errors.DataError` listing every problem: JSON that
        does not parse, a file that fails the schema (the protobuf message
        names the field path), missing ``id``/``subject.id``/``metaData``,
        intervals that end before they start, UCUM units of the wrong
        dimension. Nothing is returned for a file with a problem.
    """
    if not isinstance(key, (bytes, bytearray)) or not key:
        raise DataError("key must be non-empty bytes (see cartwin.record.pseudonym)")
    raw, name = _read_bytes(path_or_bytes, source_name)
    try:
        document = _camel(_load_json(raw, name))
        packets, kind = _schema_check(document, name)
        reader = _Reader(name, load_code_map(extra_codes))
        records = tuple(
            reader.record(packet, key, site_utc_offset_min) for packet in packets
        )
    except RecursionError:
        message = "nesting too deep: the JSON nests elements deeper than can be read"
        raise PhenopacketError([Problem("nesting-too-deep", name, message)]) from None
    if reader.problems:
        raise PhenopacketError(reader.problems)
    shown = _redact(name, packets, key)
    digest = hashlib.sha256(raw).hexdigest()
    schema = packets[0].get("metaData", {}).get("phenopacketSchemaVersion", "")
    report = reader.report(records, shown, digest, schema, kind)
    return PhenopacketImport(records, report, shown, digest)


def _read_bytes(source: Source, source_name: str | None) -> tuple[bytes, str]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source), source_name or "<bytes>"
    path = Path(os.fspath(source))
    name = source_name or path.name
    try:
        return read_bounded(path, name), name
    except InputError as exc:
        detail = exc.detail
        if exc.code == "io":
            detail = f"cannot read {path}: {detail.removeprefix('cannot be read: ')}"
        raise PhenopacketError([Problem(exc.code, name, detail)]) from None


def _load_json(raw: bytes, name: str) -> Any:
    try:
        check_json_depth(raw, name)
    except InputError as exc:
        raise PhenopacketError([Problem(exc.code, name, exc.detail)]) from None
    try:
        return json.loads(raw.decode("utf-8-sig"), parse_int=_bounded_int)
    except UnicodeDecodeError as exc:
        raise PhenopacketError(
            [Problem("encoding", name, f"not UTF-8: {exc}")]
        ) from None
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        message = f"malformed JSON: {exc.msg}"
        raise PhenopacketError(
            [Problem("malformed-json", name, message, location=where)]
        ) from None


def _bounded_int(digits: str) -> int | float:
    """An integer literal; beyond :data:`MAX_INT_DIGITS` digits, infinity."""
    if len(digits.lstrip("-")) > MAX_INT_DIGITS:
        return float("-inf") if digits.startswith("-") else float("inf")
    return int(digits)


def _number(value: Any) -> float | None:
    """A finite float of a JSON number or of its text, else ``None``.

    Protobuf JSON allows a double written as text (``"5.0"``).
    """
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    return finite_number(value)


def _camel(value: Any) -> Any:
    """Protobuf JSON accepts field names in snake_case too; use camelCase."""
    if isinstance(value, dict):
        return {_camel_key(k): _camel(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_camel(v) for v in value]
    return value


def _camel_key(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _schema_check(document: Any, name: str) -> tuple[list[dict], str]:
    """Validate against the schema; return the phenopackets and the file kind."""
    if not isinstance(document, dict):
        message = f"top level is {type(document).__name__}, not a JSON object"
        raise PhenopacketError([Problem("not-phenopacket", name, message)])
    kind = _file_kind(document)
    try:
        ParseDict(document, getattr(pps, kind)())
    except ParseError as exc:
        message = f"not a valid GA4GH Phenopacket v2 {kind}: {exc}"
        raise PhenopacketError([Problem("invalid", name, message)]) from None
    if kind == "Cohort":
        located = [
            (f"members[{n}].", m) for n, m in enumerate(document.get("members", []))
        ]
    elif kind == "Family":
        relatives = document.get("relatives", [])
        located = [("proband.", document.get("proband", {}))]
        located += [(f"relatives[{n}].", r) for n, r in enumerate(relatives)]
    else:
        located = [("", document)]
    problems = [
        p for prefix, packet in located for p in _required(packet, name, prefix)
    ]
    if problems or not located:
        raise PhenopacketError(
            problems or [Problem("invalid", name, "Cohort has no members")]
        )
    return [packet for _, packet in located], kind


def _file_kind(document: dict) -> str:
    if "members" in document:
        return "Cohort"
    return "Family" if "proband" in document else "Phenopacket"


def is_phenopacket(document: Any) -> bool:
    """Whether parsed JSON looks like a Phenopacket, Cohort or Family (for sniffing).

    True for an object without ``resourceType`` (FHIR) whose ``metaData`` has
    ``phenopacketSchemaVersion``, or that has ``subject``, ``members`` or
    ``proband`` next to ``metaData``. Validation happens in
    :func:`read_phenopacket`.
    """
    if not isinstance(document, dict) or "resourceType" in document:
        return False
    meta = document.get("metaData", document.get("meta_data"))
    if isinstance(meta, dict) and (
        "phenopacketSchemaVersion" in meta or "phenopacket_schema_version" in meta
    ):
        return True
    return meta is not None and any(
        k in document for k in ("subject", "members", "proband")
    )


def _required(packet: dict, name: str, prefix: str) -> list[Problem]:
    checks = (
        ("id", packet.get("id")),
        ("subject.id", (packet.get("subject") or {}).get("id")),
        ("metaData", packet.get("metaData")),
    )
    return [
        Problem(
            "invalid",
            name,
            "is required (GA4GH Phenopacket v2 schema)",
            field=prefix + fld,
        )
        for fld, ok in checks
        if not ok
    ]


def _redact(name: str, packets: list[dict], key: bytes) -> str:
    for packet in packets:
        source_id = packet["subject"]["id"]
        if len(source_id) >= 3 and source_id in name:
            name = name.replace(source_id, pseudonymise(source_id, key))
    return name


class _Reader:
    """Codes, counts and problems of one import."""

    def __init__(self, source: str, codes: CodeMap) -> None:
        self.source = source
        self.codes = codes
        self.tally = Tally()
        self.problems: list[Problem] = []
        self.prefixes: dict[str, str] = {}

    # -- problems and codes ---------------------------------------------------
    def problem(self, code: str, where: str, value: Any, message: str) -> None:
        """Record one problem at JSON path ``where``."""
        self.problems.append(
            Problem(code, self.source, message, field=where, value=repr(value)[:80])
        )

    def coding(self, term: dict) -> dict:
        """FHIR-style coding ``{system, code, display}`` of an ontology class."""
        curie, label = str(term.get("id", "")), str(term.get("label", "")).strip()
        system, code = curie_to_coding(curie, self.prefixes)
        return {"system": system, "code": code, "display": label}

    def mapped(self, element: str, fld: str, term: dict, target_type: str):
        """Count ``term`` and return ``(coding, row)``; raise _Skip when unmapped."""
        coding = self.coding(term)
        if coding["system"] == CURIE_SYSTEMS[TWIN_PREFIX][0]:
            self.tally.coding(element, fld, coding, None)
            raise _Skip("twin output written by cartwin, not patient data")
        row = lookup_code(self.codes, coding, target_type)
        self.tally.coding(element, fld, coding, row)
        if row is None:
            raise _Skip(f"{fld} not mapped")
        return coding, row

    # -- one phenopacket ------------------------------------------------------
    def record(
        self, packet: dict, key: bytes, site_offset: int | None
    ) -> PatientRecord:
        """Map one phenopacket to a record."""
        self.prefixes = _resource_prefixes(packet.get("metaData") or {})
        patient = _Patient()
        self._each(packet, "measurements", patient, self._measurement)
        self._each(packet, "medicalActions", patient, self._action)
        self._each(packet, "phenotypicFeatures", patient, self._feature)
        self._each(packet, "diseases", patient, self._disease)
        for element in _NOT_READ:
            for _ in packet.get(element) or ():
                self.tally.read[element] += 1
                self.tally.skip(element, f"{element} are not read by cartwin")
        subject = packet["subject"]
        infusions = [e for e in patient.events if e.kind == "infusion"]
        diagnosis = min(patient.diagnoses, default=None)
        facts = PatientFacts(
            pseudonym=_pseudonym(str(subject["id"]), key),
            age_years=self._age(subject, patient, infusions),
            sex=_sex(subject.get("sex")),
            diagnosis=diagnosis.display if diagnosis else None,
            diagnosis_code=diagnosis.code if diagnosis else None,
            disease=diagnosis.group if diagnosis else None,
            product=min(infusions, key=lambda e: e.start).name if infusions else None,
        )
        return PatientRecord(
            facts,
            tuple(patient.observations),
            tuple(patient.events),
            site_utc_offset_min=site_offset,
        )

    def _each(self, packet: dict, element: str, patient: _Patient, mapper) -> None:
        for index, item in enumerate(packet.get(element) or ()):
            self.tally.read[element] += 1
            try:
                mapper(item, f"{element}[{index}]", patient)
            except _Skip as skip:
                self.tally.skip(element, skip.args[0])
            else:
                self.tally.used[element] += 1

    # -- elements -------------------------------------------------------------
    def _measurement(self, item: dict, where: str, patient: _Patient) -> None:
        coding, row = self.mapped(
            "measurements", "assay", item.get("assay") or {}, "observation"
        )
        quantity = (item.get("value") or {}).get("quantity")
        if quantity is None:
            raise _Skip("value is not a quantity")
        when = self._instant(
            item.get("timeObserved"), f"{where}.timeObserved", use_start=True
        )[0]
        unit_term = quantity.get("unit") or {}
        ucum = unit_ucum(unit_term)
        if ucum is None:
            raise _Skip(
                f"unit {unit_term.get('id')!r} ({unit_term.get('label', '')}) "
                "is not UCUM or a known UO/NCIT unit"
            )
        value = _number(quantity.get("value", 0.0))
        at = f"{where}.value.quantity.value"
        if value is None:
            shown = quantity.get("value")
            self.problem("non-finite", at, shown, "is not a finite number")
            raise _Skip("problem")
        try:
            converted = to_canonical(value, ucum, row.target)
        except UnitError as exc:
            self.problem(
                "unit", f"{where}.value.quantity.unit", unit_term.get("id"), str(exc)
            )
            raise _Skip("problem") from None
        description = str(item.get("description", ""))
        found = _CENSORED.search(description)
        source_id = _SOURCE_ID.search(description)
        converted, censored = undetected(
            row.target, converted, found and found.group(1), row.lloq
        )
        finding = value_finding(row.target, converted, censored)
        if finding is not None:
            self.problem(finding.code, at, value, finding.message)
            raise _Skip("problem")
        patient.observations.append(
            Observation(
                quantity=row.target,
                time=when[0],
                value=converted,
                unit=canonical_unit(row.target),
                censored=censored,
                source_code=_source_code(coding),
                source_value=value,
                source_unit=clean_text(ucum),
                source_id=source_id.group(1) if source_id else where,
                source_utc_offset_min=when[1],
            )
        )

    def _action(self, item: dict, where: str, patient: _Patient) -> None:
        if "treatment" in item:
            self._treatment(item["treatment"], f"{where}.treatment", patient)
        elif "procedure" in item:
            procedure = item["procedure"]
            coding, row = self.mapped(
                "medicalActions", "procedure.code", procedure.get("code") or {}, "event"
            )
            start, end = self._instant(
                procedure.get("performed"), f"{where}.procedure.performed"
            )
            patient.events.append(_event(row, coding, start, end, where))
        else:
            kind = next(iter(item), "empty")
            raise _Skip(f"{kind} is not read (no time or not a cartwin event)")

    def _treatment(self, treatment: dict, where: str, patient: _Patient) -> None:
        coding, row = self.mapped(
            "medicalActions", "treatment.agent", treatment.get("agent") or {}, "event"
        )
        intervals = treatment.get("doseIntervals") or ()
        if not intervals:
            raise _Skip("treatment without doseIntervals has no time")
        for index, dose in enumerate(intervals):
            at = f"{where}.doseIntervals[{index}]"
            start, end = self._instant(
                {"interval": dose.get("interval")}, f"{at}.interval"
            )
            amount, unit = self._dose(dose.get("quantity"), row, f"{at}.quantity")
            event = _event(row, coding, start, end, at, amount, unit)
            if row.kind == "oxygen" and not row.detail and _is_pressure(unit):
                event = dataclasses.replace(event, detail="positive_pressure")
            patient.events.append(event)

    def _dose(self, quantity: dict | None, row: CodeMapping, where: str):
        if not quantity:
            return None, ""
        unit = unit_ucum(quantity.get("unit") or {}) or ""
        value = _number(quantity.get("value", 0.0))
        if value is None:
            self.problem(
                "non-finite",
                f"{where}.value",
                quantity.get("value"),
                "is not a finite number",
            )
            raise _Skip("problem")
        if row.kind != "infusion":
            return value, clean_text(unit)
        match = _CELLS.match(unit)
        if match is None:
            message = (
                "a CAR T dose must be a number of cells: UCUM {cells} or 10*N{cells}"
            )
            self.problem(
                "unit", f"{where}.unit", (quantity.get("unit") or {}).get("id"), message
            )
            raise _Skip("problem")
        cells = value * 10 ** int(match.group(1) or 0)
        finding = dose_finding(cells)
        if finding is not None:
            self.problem(finding.code, f"{where}.value", value, finding.message)
            raise _Skip("problem")
        return cells, "{cells}"

    def _feature(self, item: dict, where: str, patient: _Patient) -> None:
        coding, row = self.mapped(
            "phenotypicFeatures", "type", item.get("type") or {}, "event"
        )
        if item.get("excluded"):
            raise _Skip("excluded")
        start = self._instant(item.get("onset"), f"{where}.onset", use_start=True)[0]
        end = None
        if item.get("resolution"):
            end = self._instant(
                item["resolution"], f"{where}.resolution", use_start=True
            )[0]
        _check_order(self, start[0], end and end[0], where)
        patient.events.append(_event(row, coding, start, end, where))

    def _disease(self, item: dict, where: str, patient: _Patient) -> None:
        term = item.get("term") or {}
        coding = self.coding(term)
        group = disease_group(coding, self.codes)
        self.tally.disease("diseases", coding, group)
        if item.get("excluded"):
            raise _Skip("excluded")
        if group is None:
            raise _Skip("no CAR T disease code")
        onset = (item.get("onset") or {}).get("timestamp", "9999-12-31")
        code = _source_code(coding) if coding["code"] else None
        patient.diagnoses.append(
            _Diagnosis(
                group == "other",
                str(onset),
                len(patient.diagnoses),
                group,
                self._diagnosis_display(coding),
                code,
            )
        )

    def _diagnosis_display(self, coding: dict) -> str | None:
        """The code table's display of a diagnosis row, else the term's label."""
        row = self.codes.lookup(coding["system"], coding["code"])
        if row is not None and row.target_type == "diagnosis" and row.display:
            return clean_text(row.display)
        return clean_text(coding["display"]) or None

    # -- time -----------------------------------------------------------------
    def _instant(self, element: dict | None, where: str, *, use_start: bool = False):
        """``((start, offset), (end, offset) | None)`` of a TimeElement."""
        element = element or {}
        if "timestamp" in element:
            return self._parsed(element["timestamp"], f"{where}.timestamp"), None
        interval = element.get("interval")
        if interval:
            start = self._parsed(interval["start"], f"{where}.interval.start")
            end = None
            if interval.get("end"):
                end = self._parsed(interval["end"], f"{where}.interval.end")
            _check_order(self, start[0], end and end[0], where)
            if use_start:
                return start, None
            return start, (None if end is None or end[0] == start[0] else end)
        kinds = [k for k in _AGE_KINDS if k in element]
        if kinds:
            raise _Skip(
                f"time given as {kinds[0]}: an age needs the date of birth, "
                "which cartwin does not keep"
            )
        raise _Skip("no time")

    def _parsed(self, text: str, where: str) -> tuple[dt.datetime, int]:
        """``_parse_instant``; a problem outside the accepted years."""
        instant, offset = _parse_instant(text)
        finding = instant_finding(instant)
        if finding is not None:
            self.problem(finding.code, where, text, finding.message)
            raise _Skip("problem")
        return instant, offset

    def _age(
        self, subject: dict, patient: _Patient, infusions: list[Event]
    ) -> int | None:
        years, where, shown = self._years(subject, patient, infusions)
        finding = None if years is None else age_finding(years)
        if finding is None:
            return years
        self.problem(finding.code, where, shown, finding.message)
        return None

    def _years(self, subject: dict, patient: _Patient, infusions: list[Event]):
        """``(age in years or None, field, value)`` from birth date or duration."""
        birth = subject.get("dateOfBirth")
        reference = _reference_point(patient, infusions)
        if birth and reference is not None:
            instant, offset = reference
            day = (instant + dt.timedelta(minutes=offset)).date()
            born = _parse_instant(birth)[0].date()
            years = (
                day.year - born.year - ((day.month, day.day) < (born.month, born.day))
            )
            if years >= 0:
                return years, "subject.dateOfBirth", birth
            self.problem(
                "invalid",
                "subject.dateOfBirth",
                birth,
                f"is after the patient's reference day {day.isoformat()}",
            )
            return None, "", ""
        duration = (subject.get("timeAtLastEncounter") or {}).get("age") or {}
        text = duration.get("iso8601duration")
        field_name = "subject.timeAtLastEncounter.age.iso8601duration"
        return _duration_years(text), field_name, text

    # -- report ---------------------------------------------------------------
    def report(self, records, name: str, digest: str, schema: str, kind: str):
        """The :class:`PhenopacketReport` of this import."""
        quantities: dict[str, int] = {}
        for record in records:
            for quantity, count in record.quantities().items():
                quantities[quantity] = quantities.get(quantity, 0) + count
        return PhenopacketReport(
            source_name=name,
            source_sha256=digest,
            schema_version=schema,
            validation=(
                f"phenopackets {_package_version()} protobuf JSON parsing ({kind})"
            ),
            code_maps=(*self.codes.sources, "cartwin.io.phenopacket.PHENOPACKET_CODES"),
            elements=self.tally.resource_counts(),
            codings=self.tally.coding_counts(),
            n_patients=len(records),
            n_observations=sum(len(r.observations) for r in records),
            n_events=sum(len(r.events) for r in records),
            quantities=tuple(sorted(quantities.items())),
        )


def _reference_point(patient: _Patient, infusions: list[Event]):
    """(instant, UTC offset) of the first infusion, else of the last data point."""
    if infusions:
        return min((e.start, e.source_utc_offset_min) for e in infusions)
    points = [(o.time, o.source_utc_offset_min) for o in patient.observations]
    points += [(e.start, e.source_utc_offset_min) for e in patient.events]
    return max(points) if points else None


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("phenopackets")
    except PackageNotFoundError:  # pragma: no cover - installed without metadata
        return "(version unknown)"


def _event(row, coding, start, end, where, dose=None, dose_unit="") -> Event:
    return Event(
        kind=row.kind,
        start=start[0],
        end=None if end is None else end[0],
        name=row.display or clean_text(coding["display"]),
        dose=dose,
        dose_unit=dose_unit,
        detail=row.detail,
        source_code=_source_code(coding),
        source_id=where,
        source_utc_offset_min=start[1],
    )


def _source_code(coding: dict) -> str:
    return f"{clean_text(coding['system'])}|{clean_text(coding['code'])}"


def _is_pressure(ucum: str) -> bool:
    """Whether a UCUM unit is a pressure (oxygen given at a pressure is PEEP/CPAP)."""
    try:
        return to_canonical(1.0, ucum, "systolic_bp") > 0
    except UnitError:
        return False


def _check_order(reader: _Reader, start, end, where: str) -> None:
    if end is not None and end < start:
        reader.problem(
            "dates-out-of-order",
            where,
            end.isoformat(),
            f"ends before it starts ({start.isoformat()})",
        )
        raise _Skip("problem")


def _parse_instant(text: str) -> tuple[dt.datetime, int]:
    """UTC instant and UTC offset in minutes of an RFC 3339 timestamp."""
    parsed = dt.datetime.fromisoformat(str(text).replace("z", "Z"))
    offset = parsed.utcoffset() or dt.timedelta(0)
    return parsed.astimezone(dt.timezone.utc), int(offset.total_seconds() // 60)


def _duration_years(text: str | None) -> int | None:
    match = _DURATION.match(text or "")
    if not text or match is None:
        return None
    if any(len(g or "") > 18 for g in match.groups()):
        return 10**18  # far beyond any age (and no 4300-digit int); implausible
    years, months, weeks, days = (int(g or 0) for g in match.groups())
    return years + months // 12 + int((weeks * 7 + days) / 365.25)


def _pseudonym(source_id: str, key: bytes) -> str:
    tail = source_id[len(PSEUDONYM_ID_PREFIX) :]
    if source_id.startswith(PSEUDONYM_ID_PREFIX) and looks_like_pseudonym(tail):
        return tail
    return pseudonymise(source_id, key)


def _sex(value: Any) -> str | None:
    if value is None:
        return None
    name = pps.Sex.Name(value) if isinstance(value, int) else str(value)
    return _SEX_IN.get(name)


def _resource_prefixes(meta: dict) -> dict[str, str]:
    prefixes = {}
    for resource in meta.get("resources") or ():
        prefix, url = resource.get("namespacePrefix"), resource.get("url")
        if prefix and url:
            prefixes[str(prefix).upper()] = str(url).rstrip("/")
    return prefixes


def lookup_code(codes: CodeMap, coding: dict, target_type: str) -> CodeMapping | None:
    """Row for a coding ``{system, code, display}``: table, phenopacket codes, label."""
    system, code = coding["system"], coding["code"]
    row = codes.lookup(system, code) or _EXTRA_ROWS.get((system, code))
    if row is not None and row.target_type == target_type:
        return row
    return _by_label(codes, coding["display"], target_type)


def _by_label(codes: CodeMap, label: str, target_type: str) -> CodeMapping | None:
    wanted = " ".join(label.lower().split())
    if not wanted:
        return None
    rows = [*codes.rows.values(), *_EXTRA_ROWS.values()]
    hits = {
        r.target: r
        for r in rows
        if r.target_type == target_type
        and " ".join(r.display.lower().split()) == wanted
    }
    return next(iter(hits.values())) if len(hits) == 1 else None


# -- codes ----------------------------------------------------------------------
def curie_to_coding(
    curie: str, resource_urls: dict[str, str] | None = None
) -> tuple[str, str]:
    """``(system, code)`` of a CURIE such as ``LOINC:718-7``.

    Known prefixes (:data:`CURIE_SYSTEMS`, case-insensitive) give FHIR system
    URIs; other prefixes the ``url`` of the ``metaData.resources`` entry with
    that ``namespacePrefix`` (``resource_urls``, upper-case keys), else the
    prefix itself. An id without ``:`` gives ``("", id)``.

    Examples
    --------
    >>> curie_to_coding("LOINC:718-7")
    ('http://loinc.org', '718-7')
    >>> curie_to_coding("HP:0001250")
    ('http://human-phenotype-ontology.org', 'HP:0001250')
    """
    prefix, sep, local = curie.partition(":")
    if not sep:
        return "", curie.strip()
    known = CURIE_SYSTEMS.get(prefix.upper())
    if known is not None:
        system, keep, _ = known
        return system, curie.strip() if keep else local.strip()
    system = (resource_urls or {}).get(prefix.upper(), prefix)
    return system, local.strip()


def coding_to_curie(system: str, code: str) -> str:
    """CURIE of a coding (inverse of :func:`curie_to_coding`).

    Systems without a prefix in :data:`CURIE_SYSTEMS` get ``X`` plus eight hex
    digits of their SHA-256; the exporter lists that prefix with the system as
    ``url`` in ``metaData.resources``, so the reader resolves it back.
    """
    prefix = _SYSTEM_PREFIX.get(system.rstrip("/")) or _local_prefix(system)
    keep = CURIE_SYSTEMS.get(prefix, ("", False, ""))[1]
    return code if keep and code.startswith(prefix + ":") else f"{prefix}:{code}"


def _local_prefix(system: str) -> str:
    return "X" + hashlib.sha256(system.encode("utf-8")).hexdigest()[:8].upper()


def unit_ucum(unit: dict) -> str | None:
    """UCUM code of a phenopacket unit ontology class, or ``None``."""
    curie = str(unit.get("id", "")).strip()
    if curie.upper().startswith("UCUM:"):
        return curie[5:]
    return UNIT_IDS.get(curie)


def disease_group(coding: dict, codes: CodeMap) -> str | None:
    """Disease group of a disease term (rules in the module docstring)."""
    row = codes.lookup(coding["system"], coding["code"]) or _EXTRA_ROWS.get(
        (coding["system"], coding["code"])
    )
    if row is not None and row.target_type == "diagnosis":
        return row.target
    label = coding.get("display") or ""
    if _T_ALL.search(label):
        return "other"
    group = coding_group(coding, codes) or text_group(label)
    if group is None and any(word in label.lower() for word in _MALIGNANT_WORDS):
        return "other"
    return group


# -- export ---------------------------------------------------------------------
def export_phenopacket(
    record: PatientRecord,
    version: TwinVersion,
    *,
    extra_codes: CodeMapSource | None = None,
) -> dict:
    """One patient and its twin summary as a GA4GH Phenopacket v2 (JSON dict).

    Parameters
    ----------
    record : PatientRecord
        The patient's data (facts, observations, events).
    version : TwinVersion
        Twin version of the same patient; its outputs become measurements.
    extra_codes : path, sequence of paths or CodeMap, optional
        Site code tables, used to pick a coding for values without one.

    Returns
    -------
    dict
        The phenopacket, validated by parsing it into ``phenopackets.Phenopacket``.
        Serialise with ``json.dumps``.

    Raises
    ------
    DataError
        When ``version`` belongs to another patient.

    Warns
    -----
    DataQualityWarning
        For observations or events no code in the table can express (they are
        left out).
    """
    if version.pseudonym != record.facts.pseudonym:
        raise DataError(
            f"twin version {version.version_id} is of patient "
            f"{version.pseudonym}, not {record.facts.pseudonym}"
        )
    writer = _Writer(load_code_map(extra_codes))
    document = {
        "id": f"cartwin-twin-{version.version_id}",
        "subject": _subject(record.facts),
        "phenotypicFeatures": [],
        "measurements": writer.measurements(record.observations),
        "diseases": writer.diseases(record.facts),
        "medicalActions": [],
    }
    writer.events(record.events, document)
    document["measurements"] += writer.twin_outputs(version)
    document["metaData"] = writer.meta_data(version)
    document = {k: v for k, v in document.items() if v != []}
    if writer.skipped:
        warnings.warn(
            "not exported, no code in the code table expresses them: "
            + ", ".join(writer.skipped),
            DataQualityWarning,
            stacklevel=2,
        )
    try:
        ParseDict(document, pps.Phenopacket())
    except ParseError as exc:  # a bug of this exporter, not of the data
        raise DataError(f"exported phenopacket fails the schema: {exc}") from None
    return document


def _subject(facts: PatientFacts) -> dict:
    subject: dict[str, Any] = {"id": PSEUDONYM_ID_PREFIX + facts.pseudonym}
    if facts.age_years is not None:
        subject["timeAtLastEncounter"] = {
            "age": {"iso8601duration": f"P{facts.age_years}Y"}
        }
    if facts.sex in _SEX_OUT:
        subject["sex"] = _SEX_OUT[facts.sex]
    return subject


def _timestamp(instant: dt.datetime, offset_min: int) -> str:
    if offset_min == 0:
        return instant.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")
    zone = dt.timezone(dt.timedelta(minutes=offset_min))
    return instant.astimezone(zone).isoformat()


def _unit(ucum: str) -> dict:
    return {"id": f"UCUM:{ucum}", "label": ucum}


class _Writer:
    """Picks codings and collects the CURIE prefixes one export uses."""

    def __init__(self, codes: CodeMap) -> None:
        self.codes = codes
        self.systems: set[str] = set()
        self.skipped: list[str] = []

    def term(self, system: str, code: str, label: str) -> dict:
        """Ontology class of a coding (remembering its prefix)."""
        self.systems.add(system.rstrip("/"))
        return {"id": coding_to_curie(system, code), "label": label}

    def coding_for(self, source_code: str, target_type: str, target: str):
        """``(system, code, display)`` that reads back as ``target``, or ``None``."""
        system, _, code = source_code.partition("|")
        coding = {"system": system, "code": code, "display": ""}
        row = lookup_code(self.codes, coding, target_type) if system else None
        if row is not None and row.target == target:
            return system, code, row.display
        for row in (*self.codes.rows.values(), *_EXTRA_ROWS.values()):
            if row.target_type == target_type and row.target == target:
                return row.system, row.code, row.display
        return None

    def measurements(self, observations) -> list[dict]:
        """Measurements of the observations that some code expresses."""
        items = []
        for obs in observations:
            found = self.coding_for(obs.source_code, "observation", obs.quantity)
            if found is None:
                self.skipped.append(f"{obs.quantity} at {obs.time.isoformat()}")
            else:
                items.append(self.measurement(obs, found))
        return items

    def measurement(self, obs: Observation, coding: tuple[str, str, str]) -> dict:
        """Measurement of one observation (canonical value and unit)."""
        system, code, display = coding
        notes = (
            [f"censored={obs.censored} (value is the limit of quantification)"]
            if obs.censored
            else []
        )
        notes += [f"source_id={obs.source_id}"] if obs.source_id else []
        self.systems.add(CURIE_SYSTEMS["UCUM"][0])
        item = {
            "assay": self.term(system, code, display),
            "value": {"quantity": {"unit": _unit(obs.unit), "value": obs.value}},
            "timeObserved": {
                "timestamp": _timestamp(obs.time, obs.source_utc_offset_min)
            },
        }
        if notes:
            item["description"] = "cartwin: " + "; ".join(notes)
        return item

    def diseases(self, facts: PatientFacts) -> list[dict]:
        """The diagnosis as a disease (empty without one)."""
        if not facts.diagnosis and not facts.diagnosis_code:
            return []
        system, _, code = (facts.diagnosis_code or "").partition("|")
        label = facts.diagnosis or ""
        term = self.term(system, code, label) if code else {"id": "", "label": label}
        return [{"term": term}]

    def events(self, events, document: dict) -> None:
        """Add treatments, procedures and findings; note those without a code."""
        for event in events:
            if event.detail == "requested":
                continue
            target = f"{event.kind}:{event.detail}" if event.detail else event.kind
            found = self.coding_for(event.source_code, "event", target)
            if found is None:
                self.skipped.append(f"{event.kind} at {event.start.isoformat()}")
                continue
            term = self.term(found[0], found[1], event.name or found[2])
            self._add_event(event, term, document)

    def _add_event(self, event: Event, term: dict, document: dict) -> None:
        offset = event.source_utc_offset_min
        start = _timestamp(event.start, offset)
        end = _timestamp(event.end, offset) if event.end is not None else None
        if event.kind in _FINDING_KINDS:
            feature = {"type": term, "onset": {"timestamp": start}}
            if end is not None:
                feature["resolution"] = {"timestamp": end}
            document["phenotypicFeatures"].append(feature)
        elif event.kind in _DRUG_KINDS or event.dose is not None:
            dose: dict[str, Any] = {"interval": {"start": start, "end": end or start}}
            if event.dose is not None:
                dose["quantity"] = {"unit": _unit(event.dose_unit), "value": event.dose}
                self.systems.add(CURIE_SYSTEMS["UCUM"][0])
            document["medicalActions"].append(
                {"treatment": {"agent": term, "doseIntervals": [dose]}}
            )
        else:
            performed = (
                {"interval": {"start": start, "end": end}}
                if end
                else {"timestamp": start}
            )
            document["medicalActions"].append(
                {"procedure": {"code": term, "performed": performed}}
            )

    def twin_outputs(self, version: TwinVersion) -> list[dict]:
        """Forecast summaries, scores and maximum grades as measurements."""
        when = {"timestamp": _timestamp(version.created_at, 0)}
        note = f"cartwin twin output of version {version.version_id}"
        items = []
        kinetics = version.outputs.get("kinetics") or {}
        interval = kinetics.get("interval")
        for name, summary in (kinetics.get("derived") or {}).items():
            if summary.get("median") is None:
                continue
            quantity = {
                "unit": _unit(summary["unit"]),
                "value": summary["median"],
                "referenceRange": {
                    "unit": _unit(summary["unit"]),
                    "low": summary["lower"],
                    "high": summary["upper"],
                },
            }
            items.append(
                self._output(
                    f"kinetics-{name}",
                    f"forecast {name} (median)",
                    quantity,
                    when,
                    f"{note}; referenceRange is the "
                    f"{interval} posterior predictive interval",
                )
            )
        for score in version.outputs.get("scores") or ():
            if score.get("value") is not None:
                text = f"{score['name']} {score.get('timepoint', '')}".lower()
                slug = re.sub(r"[^a-z0-9]+", "-", text).strip("-")
                quantity = {"unit": _unit("1"), "value": score["value"]}
                label = f"{score['name']} ({score.get('timepoint') or 'no time point'})"
                items.append(
                    self._output(
                        f"score-{slug}",
                        label,
                        quantity,
                        when,
                        f"{note}; category {score.get('category')}",
                    )
                )
        for which in ("crs", "icans"):
            grade = (version.outputs.get(which) or {}).get("max_grade")
            if grade is not None:
                quantity = {"unit": _unit("1"), "value": grade}
                items.append(
                    self._output(
                        f"{which}-max-grade",
                        f"ASTCT {which.upper()} maximum grade",
                        quantity,
                        when,
                        note,
                    )
                )
        return items

    def _output(
        self, code: str, label: str, quantity: dict, when: dict, note: str
    ) -> dict:
        system = CURIE_SYSTEMS[TWIN_PREFIX][0]
        self.systems.add(CURIE_SYSTEMS["UCUM"][0])
        return {
            "assay": self.term(system, code, label),
            "value": {"quantity": quantity},
            "timeObserved": when,
            "description": note,
        }

    def meta_data(self, version: TwinVersion) -> dict:
        """``metaData``: creator, schema version, resources of every prefix used."""
        resources = []
        for system in sorted(self.systems):
            prefix = coding_to_curie(system, "x").rpartition(":")[0]
            name = CURIE_SYSTEMS.get(prefix, (system, False, f"code system {system}"))[
                2
            ]
            cartwin = system.startswith("https://cartwin.org/")
            resources.append(
                {
                    "id": prefix.lower(),
                    "name": name,
                    "url": system,
                    "version": __version__ if cartwin else "unspecified",
                    "namespacePrefix": prefix,
                    "iriPrefix": system + "/",
                }
            )
        return {
            "created": _timestamp(version.created_at, 0),
            "createdBy": f"cartwin {__version__}",
            "resources": resources,
            "phenopacketSchemaVersion": SCHEMA_VERSION,
            "externalReferences": [
                {
                    "id": f"cartwin.twin:{version.version_id}",
                    "description": (
                        f"cartwin twin version {version.version_id}: model "
                        f"{version.model_name} {version.model_version}, cartwin "
                        f"{version.package_version}, data sha256 {version.data_hash}"
                    ),
                }
            ],
        }


_EXTRA_ROWS = _extra_rows()
