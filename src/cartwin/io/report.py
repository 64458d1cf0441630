"""What an import read, used and left out, so nothing is dropped silently.

The report counts resources by type (read = used + skipped, each skip with its
reason) and codings by ``(resource type, element, system, code, display)``,
split into recognised (mapped by the code table) and unrecognised. It holds no
patient identifier: only codes, code displays, counts and the file's hash.
Systems, codes and displays are kept as the file writes them after
:func:`cartwin.io._checks.clean_text` (no control characters, at most 200
characters): a display is free text of the sender's choosing.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass

from cartwin.io._checks import clean_text
from cartwin.io.codes import CodeMapping


@dataclass(frozen=True)
class CodingCount:
    """How often one source coding occurred in one element of one resource type.

    Attributes
    ----------
    resource_type : str
        ``Observation``, ``Procedure``, ``MedicationAdministration``, ...
    element : str
        Where the coding sat: ``code``, ``component.code``, ``medication``.
    system, code, display : str
        The coding as written (``display`` may be ``""``).
    recognised : bool
        Whether the code table (or, for conditions, the disease rules) mapped it.
    target : str
        What it mapped to (quantity, ``kind[:detail]`` or disease group), or ``""``.
    count : int
        Number of occurrences.
    """

    resource_type: str
    element: str
    system: str
    code: str
    display: str
    recognised: bool
    target: str
    count: int


@dataclass(frozen=True)
class ResourceCount:
    """Resources of one type: read, used, and skipped with reasons."""

    resource_type: str
    read: int
    used: int
    skipped: tuple[tuple[str, int], ...]

    @property
    def skipped_total(self) -> int:
        """Number of skipped resources, all reasons together."""
        return sum(n for _, n in self.skipped)


@dataclass(frozen=True)
class ImportReport:
    """Counts of one import (see the module docstring).

    Attributes
    ----------
    source_name, source_sha256 : str
        File name (patient ids in it replaced by pseudonyms) and SHA-256 of
        the raw bytes.
    fhir_release, validation : str
        Release read and how it was validated.
    code_maps : tuple[str, ...]
        Mapping tables in force, shipped table first.
    site_utc_offset_min : int or None
        Site offset used for zone-less times.
    resources : tuple[ResourceCount, ...]
    codings : tuple[CodingCount, ...]
    n_patients, n_observations, n_events : int
        Totals of the produced records.
    quantities : tuple[tuple[str, int], ...]
        Observations produced per quantity.
    """

    source_name: str
    source_sha256: str
    fhir_release: str
    validation: str
    code_maps: tuple[str, ...]
    site_utc_offset_min: int | None
    resources: tuple[ResourceCount, ...]
    codings: tuple[CodingCount, ...]
    n_patients: int
    n_observations: int
    n_events: int
    quantities: tuple[tuple[str, int], ...]

    def resource(self, resource_type: str) -> ResourceCount:
        """Counts of one resource type (zeros when none was read)."""
        for row in self.resources:
            if row.resource_type == resource_type:
                return row
        return ResourceCount(resource_type, 0, 0, ())

    def coding_count(
        self,
        system: str,
        code: str,
        *,
        resource_type: str | None = None,
        recognised: bool | None = None,
    ) -> int:
        """Occurrences of a coding, summed over elements and displays."""
        return sum(
            row.count
            for row in self.codings
            if row.system == system
            and row.code == code
            and resource_type in (None, row.resource_type)
            and recognised in (None, row.recognised)
        )

    def to_dict(self) -> dict:
        """JSON-serialisable form (plain dicts, lists, strings and numbers)."""
        return {
            "source_name": self.source_name,
            "source_sha256": self.source_sha256,
            "fhir_release": self.fhir_release,
            "validation": self.validation,
            "code_maps": list(self.code_maps),
            "site_utc_offset_min": self.site_utc_offset_min,
            "totals": {
                "patients": self.n_patients,
                "observations": self.n_observations,
                "events": self.n_events,
            },
            "quantities": dict(self.quantities),
            "resources": {
                r.resource_type: {
                    "read": r.read,
                    "used": r.used,
                    "skipped": dict(r.skipped),
                }
                for r in self.resources
            },
            "codings": [vars(c).copy() for c in self.codings],
        }


class Tally:
    """Mutable counters filled during one import (private to the importer)."""

    def __init__(self) -> None:
        self.read: Counter[str] = Counter()
        self.used: Counter[str] = Counter()
        self.skipped: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self.codings: Counter[tuple] = Counter()

    def coding(
        self,
        resource_type: str,
        element: str,
        coding: dict,
        mapping: CodeMapping | None,
    ) -> None:
        """Count one coding, recognised when ``mapping`` is given."""
        target = mapping.target if mapping is not None else ""
        key = (resource_type, element, *_coding_text(coding), mapping is not None,
               target)  # fmt: skip
        self.codings[key] += 1

    def disease(self, resource_type: str, coding: dict, group: str | None) -> None:
        """Count one condition coding, recognised when it gave a disease group."""
        key = (resource_type, "code", *_coding_text(coding), group is not None,
               group or "")  # fmt: skip
        self.codings[key] += 1

    def skip(self, resource_type: str, reason: str) -> None:
        """Count one skipped resource."""
        self.skipped[resource_type][reason] += 1

    def resource_counts(self) -> tuple[ResourceCount, ...]:
        """Per-type counts; used + skipped always equals read."""
        rows = []
        for rtype in sorted(self.read):
            skipped = tuple(sorted(self.skipped[rtype].items()))
            rows.append(
                ResourceCount(rtype, self.read[rtype], self.used[rtype], skipped)
            )
        return tuple(rows)

    def coding_counts(self) -> tuple[CodingCount, ...]:
        """Per-coding counts, most frequent first."""
        items = sorted(self.codings.items(), key=lambda kv: (-kv[1], kv[0]))
        return tuple(CodingCount(*key, count) for key, count in items)


def _coding_text(coding: dict) -> tuple[str, str, str]:
    """``(system, code, display)`` of a coding, cleaned for keeping."""
    return tuple(clean_text(coding.get(k, "")) for k in ("system", "code", "display"))
