"""State of one FHIR import: indexes, per-patient data, problems and counts.

A patient reference must name a patient. ``Patient/`` or ``urn:uuid:`` with
nothing after it, and an id that is not a FHIR ``id`` (1-64 letters, digits,
``-`` and ``.``; ``Patient/Jane Doe`` is not one), are the problem
``invalid-reference`` of the resource that holds them, never a patient of
their own: an empty id would gather the data of every such file under one
pseudonym.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field

from cartwin.io._fhirtime import TimeProblem, parse_instant
from cartwin.io._source import Entry
from cartwin.io.codes import CodeMap, CodeMapping
from cartwin.io.problems import Problem, short_repr
from cartwin.io.report import Tally
from cartwin.record.model import Event, Observation

#: A FHIR ``id``: 1-64 letters, digits, ``-`` and ``.``.
FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


class Skip(Exception):
    """A resource is not used; ``args[0]`` is the reason counted in the report."""


@dataclass(frozen=True)
class _BadReference:
    """Why a subject reference names no valid patient."""

    message: str


@dataclass
class Diagnosis:
    """A Condition that names a disease group (candidate primary diagnosis)."""

    group: str
    display: str
    source_code: str
    onset: str
    order: int
    entry: Entry


@dataclass
class PatientData:
    """What the import collected for one patient (mutable, private)."""

    source_id: str
    order: int
    resource: dict | None = None
    entry: Entry | None = None
    observations: list[Observation] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    diagnoses: list[Diagnosis] = field(default_factory=list)


class ImportContext:
    """Indexes of one file and everything collected while mapping it."""

    def __init__(self, source: str, codes: CodeMap, site_utc_offset_min: int | None):
        self.source = source
        self.codes = codes
        self.site_utc_offset_min = site_utc_offset_min
        self.problems: list[Problem] = []
        self.tally = Tally()
        self.by_ref: dict[str, Entry] = {}
        self.patients: dict[str, PatientData] = {}
        self.used_medications: set[int] = set()
        self._lookups: dict[tuple, CodeMapping | None] = {}
        self._subjects: dict[str, PatientData | str] = {}

    # -- problems -----------------------------------------------------------
    def problem(self, code: str, entry: Entry, fld: str, value, message: str) -> None:
        """Record one problem of ``entry``."""
        self.problems.append(
            Problem(
                code=code,
                source=self.source,
                message=message,
                resource=label(entry),
                location=entry.location,
                field=fld,
                value=value if isinstance(value, str) else short_repr(value),
            )
        )

    def instant(self, entry: Entry, fld: str, text) -> tuple[dt.datetime, int] | None:
        """Parse a time element; record a problem and return ``None`` if bad."""
        try:
            return parse_instant(text, self.site_utc_offset_min)
        except TimeProblem as exc:
            self.problem(exc.code, entry, fld, short_repr(text), str(exc))
            return None

    # -- references ---------------------------------------------------------
    def index(self, entry: Entry) -> None:
        """Make ``entry`` findable by its ``fullUrl`` and ``Type/id``."""
        resource = entry.resource
        if entry.full_url:
            self.by_ref[entry.full_url] = entry
        rid = resource.get("id")
        if isinstance(rid, str):
            self.by_ref[f"{resource['resourceType']}/{rid}"] = entry

    def resolve(self, reference: str, container: dict | None = None) -> Entry | None:
        """The entry a reference points to (contained, fullUrl or Type/id)."""
        if reference.startswith("#") and container is not None:
            for inner in container.get("contained") or ():
                if isinstance(inner, dict) and inner.get("id") == reference[1:]:
                    return Entry(inner, None, "contained")
            return None
        hit = self.by_ref.get(reference)
        if hit is None:
            tail = type_and_id(reference)
            hit = self.by_ref.get(tail) if tail else None
        return hit

    def register_patient(self, entry: Entry) -> None:
        """Add a Patient resource (first pass, before anything refers to it)."""
        source_id = entry.resource.get("id") or _id_from_url(entry.full_url)
        if not source_id:
            self.problem(
                "missing-id", entry, "id", "", "Patient has neither id nor fullUrl"
            )
            return
        data = self.patient(source_id)
        data.resource, data.entry = entry.resource, entry

    def patient(self, source_id: str) -> PatientData:
        """The collected data of a patient, created on first use."""
        data = self.patients.get(source_id)
        if data is None:
            data = self.patients[source_id] = PatientData(source_id, len(self.patients))
        return data

    def subject(self, entry: Entry, *, report: bool = True) -> PatientData:
        """The patient a resource is about.

        With ``report``, an invalid patient reference is recorded as the
        problem ``invalid-reference`` of ``entry``.

        Raises
        ------
        Skip
            When the subject is missing, is not a Patient, or is invalid.
        """
        name = "subject" if entry.resource.get("subject") else "patient"
        subject = entry.resource.get(name) or {}
        reference = subject.get("reference") if isinstance(subject, dict) else None
        if not reference:
            raise Skip("no subject reference")
        known = self._subjects.get(reference)
        if known is None:
            try:
                known = self._subject_of(reference)
            except Skip as skip:
                known = skip.args[0]
            self._subjects[reference] = known
        if isinstance(known, _BadReference):
            if report:
                field_name = f"{name}.reference"
                self.problem("invalid-reference", entry, field_name,
                             short_repr(reference),
                             known.message)  # fmt: skip
            raise Skip("problem")
        if isinstance(known, str):
            raise Skip(known)
        return known

    def _subject_of(self, reference: str) -> PatientData | _BadReference:
        target = self.resolve(reference)
        if target is not None:
            if target.resource["resourceType"] != "Patient":
                raise Skip("subject is not a Patient")
            rid = target.resource.get("id") or _id_from_url(target.full_url)
            return self._valid_patient(rid)
        tail = type_and_id(reference)
        if tail and tail.startswith("Patient/"):
            return self._valid_patient(tail.partition("/")[2])
        if reference.startswith(("urn:uuid:", "urn:oid:")):
            return self._valid_patient(reference.rpartition(":")[2])
        if reference.rstrip("/").endswith("Patient") or not reference.strip("/ "):
            return self._valid_patient("")
        raise Skip("subject is not a Patient")

    def _valid_patient(self, rid: str | None) -> PatientData | _BadReference:
        if not rid:
            return _BadReference("names no patient: the id after it is empty")
        if not FHIR_ID.match(rid):
            return _BadReference(
                "is not a valid patient reference: a FHIR id has 1 to 64 "
                "letters, digits, '-' and '.'"
            )
        return self.patient(rid)

    # -- codes --------------------------------------------------------------
    def first_mapping(
        self, rtype: str, element: str, concept, target_type: str
    ) -> tuple[dict, CodeMapping] | None:
        """Count every coding of ``concept``; return the first that maps."""
        found = None
        if not isinstance(concept, dict):
            return None
        for coding in concept.get("coding") or ():
            row = self._lookup(coding.get("system"), coding.get("code"), target_type)
            self.tally.coding(rtype, element, coding, row)
            if found is None and row is not None:
                found = (coding, row)
        return found

    def _lookup(self, system, code, target_type: str) -> CodeMapping | None:
        key = (system, code, target_type)
        if key not in self._lookups:
            row = self.codes.lookup(system, code)
            ok = row is not None and row.target_type == target_type
            self._lookups[key] = row if ok else None
        return self._lookups[key]


def label(entry: Entry) -> str:
    """``Type/id`` of an entry (``Type`` plus ``fullUrl`` when there is no id)."""
    resource = entry.resource
    rtype = resource.get("resourceType", "?")
    rid = resource.get("id")
    if isinstance(rid, str) and rid:
        return f"{rtype}/{rid}"
    return f"{rtype} {entry.full_url}" if entry.full_url else str(rtype)


def type_and_id(reference: str) -> str | None:
    """``Type/id`` at the end of a relative or absolute reference."""
    parts = reference.split("/")
    if "_history" in parts:
        parts = parts[: parts.index("_history")]
    if len(parts) >= 2 and parts[-2][:1].isupper():
        return f"{parts[-2]}/{parts[-1]}"
    return None


def _id_from_url(url: str | None) -> str | None:
    if not url:
        return None
    if url.startswith(("urn:uuid:", "urn:oid:")):
        return url.rpartition(":")[2]
    return url.rstrip("/").rpartition("/")[2] or None
