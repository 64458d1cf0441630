"""What an OMOP import read, recognised, used and skipped.

For every table read, the report counts rows (read = used + skipped, each skip
with its reason) and, per concept id of the table's main concept column
(``measurement_concept_id``, ``drug_concept_id``, ...), how many rows carried
it and whether cartwin recognised it (and as what). It holds no person
identifier: only concept ids, concept names, counts and the source hash.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass


@dataclass(frozen=True)
class ConceptCount:
    """Rows of one table carrying one concept id.

    Attributes
    ----------
    table : str
        OMOP table, lower case.
    concept_id : int
        Value of the table's concept column (0 is "No matching concept").
    name : str
        Concept name from the concept tables or the source vocabulary
        (``""`` when neither has it).
    recognised : bool
        Whether cartwin maps the concept to something it reads in this table.
    target : str
        ``target_type:target`` it maps to (``observation:crp``), or ``""``.
    via : str
        How it was recognised: ``table`` (a concept table), ``vocabulary``
        (the source's ``concept`` table and the code table) or ``ancestor``.
    count : int
        Number of rows.
    """

    table: str
    concept_id: int
    name: str
    recognised: bool
    target: str
    via: str
    count: int


@dataclass(frozen=True)
class TableCount:
    """Rows of one table: read, used, and skipped with reasons."""

    table: str
    read: int
    used: int
    skipped: tuple[tuple[str, int], ...]

    @property
    def skipped_total(self) -> int:
        """Number of skipped rows, all reasons together."""
        return sum(n for _, n in self.skipped)


@dataclass(frozen=True)
class OmopReport:
    """Counts of one OMOP import (see the module docstring).

    Attributes
    ----------
    source_name, source_kind, source_sha256 : str
        The source as shown in messages (no password), ``csv``, ``duckdb`` or
        ``postgresql``, and the content hash (see :mod:`cartwin.io.omop`).
    cdm_release : str
        CDM release the reader targets.
    concept_tables : tuple[str, ...]
        Concept tables in force, shipped table first.
    site_utc_offset_min : int
        Offset used to place the zone-less OMOP datetimes.
    tables_absent : tuple[str, ...]
        Optional tables the source does not have.
    tables, concepts : tuple
        :class:`TableCount` and :class:`ConceptCount` rows.
    n_patients, n_observations, n_events : int
        Totals of the produced records.
    quantities : tuple[tuple[str, int], ...]
        Observations produced per quantity.
    """

    source_name: str
    source_kind: str
    source_sha256: str
    cdm_release: str
    concept_tables: tuple[str, ...]
    site_utc_offset_min: int
    tables_absent: tuple[str, ...]
    tables: tuple[TableCount, ...]
    concepts: tuple[ConceptCount, ...]
    n_patients: int
    n_observations: int
    n_events: int
    quantities: tuple[tuple[str, int], ...]

    def table(self, table: str) -> TableCount:
        """Counts of one table (zeros when it was not read)."""
        for row in self.tables:
            if row.table == table:
                return row
        return TableCount(table, 0, 0, ())

    def concept_counts(
        self, table: str, *, recognised: bool | None = None
    ) -> dict[int, int]:
        """Rows per concept id of ``table``, optionally only (un)recognised ones."""
        return {
            row.concept_id: row.count
            for row in self.concepts
            if row.table == table and recognised in (None, row.recognised)
        }

    def to_dict(self) -> dict:
        """JSON-serialisable form (plain dicts, lists, strings and numbers)."""
        return {
            "source_name": self.source_name,
            "source_kind": self.source_kind,
            "source_sha256": self.source_sha256,
            "cdm_release": self.cdm_release,
            "concept_tables": list(self.concept_tables),
            "site_utc_offset_min": self.site_utc_offset_min,
            "tables_absent": list(self.tables_absent),
            "totals": {
                "patients": self.n_patients,
                "observations": self.n_observations,
                "events": self.n_events,
            },
            "quantities": dict(self.quantities),
            "tables": [
                {
                    "table": t.table,
                    "read": t.read,
                    "used": t.used,
                    "skipped": dict(t.skipped),
                }
                for t in self.tables
            ],
            "concepts": [
                {
                    "table": c.table,
                    "concept_id": c.concept_id,
                    "name": c.name,
                    "recognised": c.recognised,
                    "target": c.target,
                    "via": c.via,
                    "count": c.count,
                }
                for c in self.concepts
            ],
        }


class Tally:
    """Mutable counters filled while rows are mapped."""

    def __init__(self) -> None:
        self.read: Counter[str] = Counter()
        self.used: Counter[str] = Counter()
        self.skips: dict[str, Counter[str]] = defaultdict(Counter)
        self.concepts: Counter[tuple[str, int]] = Counter()

    def skip(self, table: str, reason: str) -> None:
        """Count one skipped row of ``table``."""
        self.skips[table][reason] += 1

    def table_counts(self) -> tuple[TableCount, ...]:
        """The counters as :class:`TableCount` rows, in table order of reading."""
        return tuple(
            TableCount(
                table=table,
                read=self.read[table],
                used=self.used[table],
                skipped=tuple(sorted(self.skips[table].items())),
            )
            for table in self.read
        )
