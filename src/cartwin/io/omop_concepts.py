"""The OMOP concept table: standard concept ids to cartwin quantities and events.

One CSV table, shipped as ``cartwin/data/codes/omop_concepts.csv``, lists the
OMOP standard concept ids cartwin reads, with the columns

``concept_id,domain_id,vocabulary_id,concept_code,concept_name,target_type,target,note``

``target_type`` is ``observation`` (``target`` is a quantity key of
``quantities.csv``), ``event`` (an event kind of
:data:`cartwin.record.model.EVENT_KINDS`, optionally ``kind:detail``),
``diagnosis`` (a disease group: ``LBCL``, ``MM``, ``B-ALL``, ``other``) or
``unit`` (``target`` is the UCUM code of a unit concept). ``note`` says where
each id comes from: most were read from the ``CONCEPT.csv`` of the OHDSI
Synthea sample (vocabulary release v5.0 09-APR-22), a few drug ids from two
public ETL mapping tables named in the row. An id that could not be confirmed
is not listed (see *Known limits*).

A site adds or overrides rows without editing code: extra CSV files with the
same columns are read after the shipped table (environment variable
``CARTWIN_OMOP_CONCEPTS``, paths separated by :data:`os.pathsep`, then the
``extra`` argument of :func:`load_concept_map`); a row for an existing
``concept_id`` replaces it. Only ``concept_id``, ``target_type`` and
``target`` are required.

Known limits
------------
* No condition concept for diffuse large B-cell lymphoma or multiple myeloma
  is listed: the sample's vocabulary has none and no public source with the
  id and its name was found. Conditions are still grouped by the name and
  ICD-10 code the source's own ``concept`` table gives (see
  :mod:`cartwin.io.omop_map`), or a site lists its ids as ``diagnosis`` rows.
* Ingredient concepts of norepinephrine, epinephrine, vasopressin and
  dopamine, of CAR T products other than axicabtagene ciloleucel, and of the
  ICE score and CAR T levels (local codes everywhere) are not listed for the
  same reason. Drug exposures coded below the ingredient level are recognised
  through the source's ``concept_ancestor`` table when it has one.
* Type concept 32880 ("Standard algorithm") is not in the sample's vocabulary,
  so the export writes type concept 0 (see :mod:`cartwin.io.omop_export`).
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io as _stdio
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Iterable, Mapping, Sequence, Union

from cartwin.errors import DataError
from cartwin.io.codes import DISEASE_GROUPS
from cartwin.record.model import EVENT_KINDS
from cartwin.record.units import quantity_specs

#: Environment variable naming extra concept tables (``os.pathsep``-separated).
CONCEPTS_ENV = "CARTWIN_OMOP_CONCEPTS"
#: Columns of a concept table, in order.
COLUMNS = (
    "concept_id",
    "domain_id",
    "vocabulary_id",
    "concept_code",
    "concept_name",
    "target_type",
    "target",
    "note",
)
#: Allowed values of ``target_type``.
TARGET_TYPES = ("observation", "event", "diagnosis", "unit")


class ConceptMapError(DataError):
    """A concept table is malformed; the message lists every bad row."""


@dataclass(frozen=True)
class ConceptTarget:
    """What one OMOP concept id means to cartwin.

    Attributes
    ----------
    concept_id : int
        OMOP concept id.
    target_type : str
        ``"observation"``, ``"event"``, ``"diagnosis"`` or ``"unit"``.
    target : str
        Quantity key, ``kind[:detail]``, disease group or UCUM code.
    name : str
        Concept name (``concept_name`` of the table, or of the source's
        vocabulary when found there).
    origin : str
        Where the mapping came from: ``file:line`` of a concept table,
        ``vocabulary`` (the source's ``concept`` table and the code table
        :mod:`cartwin.io.codes`) or ``ancestor <id>`` (``concept_ancestor``).
    """

    concept_id: int
    target_type: str
    target: str
    name: str
    origin: str

    @property
    def kind(self) -> str:
        """Event kind (or quantity, group, unit) before any ``:``."""
        return self.target.partition(":")[0]

    @property
    def detail(self) -> str:
        """Event detail after ``:`` (``""`` when none)."""
        return self.target.partition(":")[2]


@dataclass(frozen=True)
class ConceptMap:
    """Concept rows in force, keyed by concept id.

    Attributes
    ----------
    rows : Mapping[int, ConceptTarget]
        The rows; later tables have replaced earlier ones.
    sources : tuple[str, ...]
        Tables read, shipped table first.
    """

    rows: Mapping[int, ConceptTarget]
    sources: tuple[str, ...]

    def get(self, concept_id: int | None) -> ConceptTarget | None:
        """The row of ``concept_id``, or ``None`` when it is not listed."""
        if concept_id is None:
            return None
        return self.rows.get(concept_id)

    def of_type(self, target_type: str) -> dict[int, ConceptTarget]:
        """All rows of one ``target_type``."""
        return {k: v for k, v in self.rows.items() if v.target_type == target_type}

    def digest(self) -> str:
        """SHA-256 of the rows in force (changes when any mapping changes)."""
        text = "\n".join(
            f"{k}|{v.target_type}|{v.target}" for k, v in sorted(self.rows.items())
        )
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def __len__(self) -> int:
        return len(self.rows)


#: What :func:`load_concept_map` accepts as site tables.
ConceptSource = Union[str, os.PathLike, Sequence[Union[str, os.PathLike]], ConceptMap]


def load_concept_map(extra: ConceptSource | None = None) -> ConceptMap:
    """Return the shipped concept table extended by the site's tables.

    Parameters
    ----------
    extra : path, sequence of paths or ConceptMap, optional
        Site tables read after the shipped table and after the files named by
        ``CARTWIN_OMOP_CONCEPTS``. A :class:`ConceptMap` is returned unchanged.

    Raises
    ------
    ConceptMapError
        When a table cannot be read or has bad rows, naming the file, line,
        column and value of each.
    """
    if isinstance(extra, ConceptMap):
        return extra
    rows = dict(_shipped_rows())
    sources = ["cartwin/data/codes/omop_concepts.csv"]
    for path in [*_env_paths(), *_as_paths(extra)]:
        rows.update(_read_table(_read_text(path), str(path)))
        sources.append(str(path))
    return ConceptMap(rows=rows, sources=tuple(sources))


@functools.cache
def _shipped_rows() -> tuple[tuple[int, ConceptTarget], ...]:
    text = resources.files("cartwin.data.codes").joinpath("omop_concepts.csv")
    table = _read_table(text.read_text(encoding="utf-8"), "omop_concepts.csv")
    return tuple(table.items())


def _env_paths() -> list[Path]:
    value = os.environ.get(CONCEPTS_ENV, "")
    return [Path(p) for p in value.split(os.pathsep) if p.strip()]


def _as_paths(extra) -> list[Path]:
    if extra is None:
        return []
    if isinstance(extra, (str, os.PathLike)):
        return [Path(extra)]
    return [Path(p) for p in extra]


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConceptMapError(f"cannot read OMOP concept table {path}: {exc}") from None


def _read_table(text: str, name: str) -> dict[int, ConceptTarget]:
    reader = csv.DictReader(_stdio.StringIO(text))
    needed = ("concept_id", "target_type", "target")
    missing = [c for c in needed if c not in (reader.fieldnames or ())]
    if missing:
        raise ConceptMapError(
            f"OMOP concept table {name}: missing column(s) {', '.join(missing)}; "
            f"the header must be {','.join(COLUMNS)}"
        )
    rows: dict[int, ConceptTarget] = {}
    problems: list[str] = []
    for line_no, raw in enumerate(reader, start=2):
        row = {k: (raw.get(k) or "").strip() for k in COLUMNS}
        where = f"{name}:{line_no}"
        found = list(_row_problems(row, where))
        if not found and int(row["concept_id"]) in rows:
            found.append(f"{where}: duplicate of {rows[int(row['concept_id'])].origin}")
        problems.extend(found)
        if not found:
            rows[int(row["concept_id"])] = _target(row, where)
    if problems:
        raise ConceptMapError(
            f"OMOP concept table {name} has bad rows:\n" + "\n".join(problems)
        )
    return rows


def _target(row: Mapping[str, str], where: str) -> ConceptTarget:
    return ConceptTarget(
        concept_id=int(row["concept_id"]),
        target_type=row["target_type"],
        target=row["target"],
        name=row["concept_name"],
        origin=where,
    )


def _row_problems(row: Mapping[str, str], where: str) -> Iterable[str]:
    concept_id = row["concept_id"]
    if not concept_id.lstrip("-").isdigit() or int(concept_id) == 0:
        yield f"{where}: column concept_id = {concept_id!r} is not a non-zero integer"
    target_type, target = row["target_type"], row["target"]
    if not target:
        yield f"{where}: column target is empty"
    elif target_type not in TARGET_TYPES:
        yield (
            f"{where}: column target_type = {target_type!r}; "
            f"allowed: {', '.join(TARGET_TYPES)}"
        )
    else:
        yield from _target_problems(target_type, target, where)


def _target_problems(target_type: str, target: str, where: str) -> Iterable[str]:
    if target_type == "observation" and target not in quantity_specs():
        yield f"{where}: column target = {target!r} is not a quantity in quantities.csv"
    elif target_type == "event" and target.partition(":")[0] not in EVENT_KINDS:
        yield (
            f"{where}: column target = {target!r} is not an event kind; "
            f"allowed: {', '.join(EVENT_KINDS)} (optionally kind:detail)"
        )
    elif target_type == "diagnosis" and target not in DISEASE_GROUPS:
        yield (
            f"{where}: column target = {target!r}; allowed: {', '.join(DISEASE_GROUPS)}"
        )
