"""Import of FHIR R4 JSON into :class:`~cartwin.record.model.PatientRecord`.

:func:`import_fhir` reads a Bundle, a single resource or NDJSON (optionally
gzip/bzip2 compressed), validates each resource it reads with the
``fhir.resources`` R4B models (the closest release to R4 the package ships;
see :mod:`cartwin.io._validate`), maps codes through the code table
(:mod:`cartwin.io.codes`), converts units at the boundary
(:func:`cartwin.record.units.to_canonical`) and pseudonymises patients.

What is read
------------
- Patient: gender and birth date, reduced to the age in whole years at CAR T
  infusion (or at the patient's last data point when there is no infusion).
  Name, address, telecom, identifiers and the birth date itself are not kept.
  The pseudonym is the keyed hash of ``Patient.id`` (or of the id at the end
  of its ``fullUrl``). Patients that are referenced but absent from the file
  get a record with only a pseudonym.
- Observation: ``code`` and each ``component.code`` through the table (the
  first coding that maps wins); ``valueQuantity`` (or ``valueInteger``) in
  the canonical unit; ``comparator`` ``<``/``<=`` gives a value censored
  "below" at the limit, ``>``/``>=`` censored "above".
- Procedure, MedicationAdministration: events of the mapped kind (``kind`` and
  ``detail`` from the table's ``kind:detail``); administrations carry
  ``dosage.dose``. The CAR T infusion dose is converted to cells (``{cells}``,
  from ``10*N{cells}`` too) and its coding display becomes
  ``PatientFacts.product``.
- MedicationRequest: an event of the mapped kind with ``detail="requested"``
  at ``authoredOn``. Grading rules (ASTCT CRS: vasopressors, tocilizumab) must
  use administrations, not requests. Requests for the CAR T product itself
  are skipped, so that an order can never become day 0.
- Condition: disease group (:mod:`cartwin.io._disease`) of the first
  condition by onset among LBCL / MM / B-ALL, else among other malignancies.
- Medication: read through ``medicationReference`` (in the file or
  ``contained``).

Every other resource type is counted and skipped. Resources with status
``entered-in-error``, ``cancelled`` or ``not-done`` are skipped with that
reason. See :mod:`cartwin.io._fhirtime` for times without zone and for dates,
:mod:`cartwin.io._checks` for plausible values, ages and doses (an age
outside 0-120 years is a problem of ``Patient.birthDate``), and
:mod:`cartwin.io._input` for the input size limit. A resource nested too deep
to validate is the problem ``nesting-too-deep``, never a crash.

All problems of a file are collected and raised together
(:class:`~cartwin.io.problems.FhirImportError`); a failed import returns
nothing. The cyclic garbage collector is paused while a file is read (see
:func:`_gc_paused`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
import hashlib
import os
from dataclasses import dataclass

from cartwin.errors import DataError
from cartwin.io._checks import age_finding
from cartwin.io._context import ImportContext, PatientData, Skip
from cartwin.io._fhirtime import TimeProblem, parse_date
from cartwin.io._resources import (
    map_administration,
    map_condition,
    map_observation,
    map_procedure,
    map_request,
)
from cartwin.io._source import Entry, parse_entries, read_source
from cartwin.io._validate import (
    READ_TYPES,
    VALIDATION_RELEASE,
    Issue,
    ResourceValidator,
    model_class,
)
from cartwin.io.codes import CodeMapSource, load_code_map
from cartwin.io.problems import raise_problems
from cartwin.io.report import ImportReport
from cartwin.record.model import Event, PatientFacts, PatientRecord
from cartwin.record.pseudonym import pseudonymise

#: FHIR release the importer reads.
FHIR_RELEASE = "R4 (4.0.1)"
#: Largest UTC offset in use anywhere (UTC+14:00), in minutes.
MAX_UTC_OFFSET_MIN = 14 * 60

Source = str | os.PathLike | bytes

_MAPPERS = {
    "Observation": map_observation,
    "Procedure": map_procedure,
    "MedicationAdministration": map_administration,
    "MedicationRequest": map_request,
}


@dataclass(frozen=True)
class FhirImport:
    """Result of :func:`import_fhir`.

    Attributes
    ----------
    records : tuple[PatientRecord, ...]
        One record per patient present or referenced, in order of appearance.
    report : ImportReport
        What was read, used and skipped, and every coding seen.
    source_sha256 : str
        SHA-256 of the raw bytes as given (before decompression).
    source_name : str
        File name, with any patient id in it replaced by its pseudonym.
    """

    records: tuple[PatientRecord, ...]
    report: ImportReport
    source_sha256: str
    source_name: str


def import_fhir(
    path_or_bytes: Source,
    *,
    key: bytes,
    site_utc_offset_min: int | None = None,
    extra_codes: CodeMapSource | None = None,
    source_name: str | None = None,
    validate_all: bool = False,
) -> FhirImport:
    """Read FHIR R4 JSON and return pseudonymised patient records.

    Parameters
    ----------
    path_or_bytes : path or bytes
        A ``.json``, ``.ndjson``, ``.json.gz`` or ``.json.bz2`` file, or its bytes.
    key : bytes
        Pseudonymisation key (:func:`cartwin.record.pseudonym.load_key`).
    site_utc_offset_min : int, optional
        UTC offset of the site in minutes (-840 to 840). Needed to accept
        date-times without zone and dates without time (placed at 12:00 site
        time); without it they are errors.
    extra_codes : path, sequence of paths or CodeMap, optional
        Site code tables extending the shipped one (see
        :func:`cartwin.io.codes.load_code_map`; ``CARTWIN_CODE_MAP`` is read
        too).
    source_name : str, optional
        Name used in messages; defaults to the file name or ``<bytes>``.
    validate_all : bool
        Validate resource types the importer does not read too.

    Returns
    -------
    FhirImport

    Raises
    ------
    FhirImportError
        A :class:`~cartwin.errors.DataError` listing every problem of the file
        in ``.problems`` (:class:`~cartwin.io.problems.FhirUnitError`, also a
        :class:`~cartwin.errors.UnitError`, when all are unit problems).
    DataError
        For a bad ``key`` or ``site_utc_offset_min``.
    """
    _check_arguments(key, site_utc_offset_min)
    codes = load_code_map(extra_codes)
    raw, name = read_source(path_or_bytes, source_name)
    with _gc_paused():
        entries = parse_entries(raw, name)
        ctx = ImportContext(name, codes, site_utc_offset_min)
        work = _first_pass(ctx, entries, validate_all)
        _map_resources(ctx, work)
        records = tuple(_record(ctx, data, key) for data in ctx.patients.values())
    raise_problems(ctx.problems)
    shown_name = _redact(name, ctx, key)
    digest = hashlib.sha256(raw).hexdigest()
    report = _report(ctx, records, shown_name, digest, validate_all)
    return FhirImport(records, report, digest, shown_name)


@contextlib.contextmanager
def _gc_paused():
    """Pause the cyclic garbage collector, restoring its state afterwards.

    An import builds millions of small acyclic objects (parsed JSON, validated
    models); the collector's passes over them cost about a fifth of the time
    of a 50 000-resource bundle (``benchmarks/bench_import.py``) and free
    nothing. Reference counting still frees everything as usual.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _check_arguments(key: bytes, site_utc_offset_min: int | None) -> None:
    if not isinstance(key, (bytes, bytearray)) or not key:
        raise DataError("key must be non-empty bytes (see cartwin.record.pseudonym)")
    if site_utc_offset_min is None:
        return
    if not isinstance(site_utc_offset_min, int) or isinstance(
        site_utc_offset_min, bool
    ):
        raise DataError(
            f"site_utc_offset_min = {site_utc_offset_min!r}; must be an int (minutes)"
        )
    if abs(site_utc_offset_min) > MAX_UTC_OFFSET_MIN:
        raise DataError(
            f"site_utc_offset_min = {site_utc_offset_min}; allowed "
            f"-{MAX_UTC_OFFSET_MIN} to {MAX_UTC_OFFSET_MIN} minutes"
        )


def _first_pass(ctx: ImportContext, entries: list[Entry], validate_all: bool):
    work = []
    validator = ResourceValidator(site_utc_offset_min=ctx.site_utc_offset_min)
    for entry in entries:
        rtype = entry.resource["resourceType"]
        ctx.tally.read[rtype] += 1
        if model_class(rtype) is None:
            message = "is not a FHIR resource type"
            ctx.problem(
                "unknown-resource-type", entry, "resourceType", repr(rtype), message
            )
            ctx.tally.skip(rtype, "unknown resource type")
            continue
        if rtype in READ_TYPES or validate_all:
            issues = _validated(validator, entry)
            for issue in issues:
                ctx.problem(issue.code, entry, issue.field, issue.value, issue.message)
            if issues:
                ctx.tally.skip(rtype, "invalid")
                continue
        ctx.index(entry)
        if rtype not in READ_TYPES:
            ctx.tally.skip(rtype, "unsupported resource type")
            continue
        if rtype == "Patient":
            ctx.register_patient(entry)
        work.append(entry)
    return work


def _validated(validator: ResourceValidator, entry: Entry):
    """Validation issues of one resource; deep nesting is an issue too."""
    try:
        return validator.issues(entry.resource)
    except RecursionError:
        return [_TOO_DEEP]


_TOO_DEEP = Issue(
    "nesting-too-deep",
    "",
    "",
    "nesting too deep: the resource nests elements deeper than can be validated",
)


def _map_resources(ctx: ImportContext, work: list[Entry]) -> None:
    for order, entry in enumerate(work):
        rtype = entry.resource["resourceType"]
        _note_subject(ctx, entry)
        try:
            _map_one(ctx, entry, rtype, order)
        except Skip as skip:
            ctx.tally.skip(rtype, skip.args[0])
        except RecursionError:
            ctx.problem("nesting-too-deep", entry, "", "", _TOO_DEEP.message)
            ctx.tally.skip(rtype, "problem")
    for entry in work:
        if entry.resource["resourceType"] != "Medication":
            continue
        if id(entry.resource) in ctx.used_medications:
            ctx.tally.used["Medication"] += 1
        else:
            ctx.tally.skip("Medication", "not referenced by a mapped medication use")


def _map_one(ctx: ImportContext, entry: Entry, rtype: str, order: int) -> None:
    if rtype == "Condition":
        map_condition(ctx, entry, order)
    elif rtype in _MAPPERS:
        _MAPPERS[rtype](ctx, entry)
        ctx.tally.used[rtype] += 1
    elif rtype == "Patient":
        ctx.tally.used[rtype] += 1


def _note_subject(ctx: ImportContext, entry: Entry) -> None:
    """Give every referenced patient a record, even when nothing maps."""
    if entry.resource["resourceType"] in ("Patient", "Medication"):
        return
    try:
        ctx.subject(entry, report=False)
    except Skip:
        pass  # the mapper counts the reason when the resource matters


def _record(ctx: ImportContext, data: PatientData, key: bytes) -> PatientRecord:
    infusion = _infusion(data.events)
    diagnosis = _primary_diagnosis(ctx, data)
    resource = data.resource or {}
    facts = PatientFacts(
        pseudonym=pseudonymise(data.source_id, key),
        age_years=_age(ctx, data, infusion),
        sex=resource.get("gender"),
        diagnosis=diagnosis.display if diagnosis else None,
        diagnosis_code=diagnosis.source_code if diagnosis else None,
        disease=diagnosis.group if diagnosis else None,
        product=infusion.name if infusion else None,
    )
    return PatientRecord(
        facts=facts,
        observations=tuple(data.observations),
        events=tuple(data.events),
        site_utc_offset_min=ctx.site_utc_offset_min,
    )


def _infusion(events: list[Event]) -> Event | None:
    infusions = [e for e in events if e.kind == "infusion" and e.detail != "requested"]
    return min(infusions, key=lambda e: e.start) if infusions else None


def _primary_diagnosis(ctx: ImportContext, data: PatientData):
    if not data.diagnoses:
        return None
    ranked = sorted(
        data.diagnoses, key=lambda d: (d.group == "other", d.onset, d.order)
    )
    ctx.tally.used["Condition"] += 1
    for _ in ranked[1:]:
        ctx.tally.skip("Condition", "not the primary diagnosis")
    return ranked[0]


def _age(ctx: ImportContext, data: PatientData, infusion: Event | None) -> int | None:
    birth_text = (data.resource or {}).get("birthDate")
    reference = _reference_day(data, infusion)
    if not birth_text or reference is None:
        return None
    try:
        birth = parse_date(birth_text)
    except TimeProblem as exc:
        ctx.problem(exc.code, data.entry, "birthDate", repr(birth_text), str(exc))
        return None
    years = (
        reference.year
        - birth.year
        - ((reference.month, reference.day) < (birth.month, birth.day))
    )
    if years < 0:
        message = f"is after the patient's reference day {reference.isoformat()}"
        ctx.problem("invalid", data.entry, "birthDate", repr(birth_text), message)
        return None
    finding = age_finding(years)
    if finding is not None:
        ctx.problem(finding.code, data.entry, "birthDate", repr(birth_text),
                    f"{finding.message} (at {reference.isoformat()})")  # fmt: skip
        return None
    return years


def _reference_day(data: PatientData, infusion: Event | None) -> dt.date | None:
    """Local calendar day of infusion, else of the patient's last data point."""
    if infusion is not None:
        return _local_day(infusion.start, infusion.source_utc_offset_min)
    points = [(o.time, o.source_utc_offset_min) for o in data.observations]
    points += [(e.start, e.source_utc_offset_min) for e in data.events]
    if not points:
        return None
    return _local_day(*max(points))


def _local_day(instant: dt.datetime, offset_min: int) -> dt.date:
    return (instant + dt.timedelta(minutes=offset_min)).date()


def _redact(name: str, ctx: ImportContext, key: bytes) -> str:
    for source_id in sorted(ctx.patients, key=len, reverse=True):
        if len(source_id) >= 3 and source_id in name:
            name = name.replace(source_id, pseudonymise(source_id, key))
    return name


def _report(ctx, records, name: str, digest: str, validate_all: bool) -> ImportReport:
    quantities: dict[str, int] = {}
    for record in records:
        for quantity, count in record.quantities().items():
            quantities[quantity] = quantities.get(quantity, 0) + count
    scope = "all resource types" if validate_all else "resource types read"
    return ImportReport(
        source_name=name,
        source_sha256=digest,
        fhir_release=FHIR_RELEASE,
        validation=f"{VALIDATION_RELEASE}; {scope}",
        code_maps=ctx.codes.sources,
        site_utc_offset_min=ctx.site_utc_offset_min,
        resources=ctx.tally.resource_counts(),
        codings=ctx.tally.coding_counts(),
        n_patients=len(records),
        n_observations=sum(len(r.observations) for r in records),
        n_events=sum(len(r.events) for r in records),
        quantities=tuple(sorted(quantities.items())),
    )
