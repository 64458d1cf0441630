"""The code mapping table: source codings to cartwin quantities and events.

Every code cartwin understands is listed in one CSV table, shipped as
``cartwin/data/codes/codes.csv`` with the columns

``system,code,target_type,target,display,note``

and the optional column ``lloq``: the lower limit of quantification of the
assay a code stands for, in the canonical unit of its quantity (for example
``1`` for a flow cytometry CAR T assay in cells/µL). A CAR T level of exactly
0 without comparator from such a code is stored as censored below that limit
(see :mod:`cartwin.io._checks`); without it, such a 0 is refused.

``target_type`` is ``observation`` (``target`` is a quantity key from
``quantities.csv``), ``event`` (``target`` is an event kind from
:data:`cartwin.record.model.EVENT_KINDS`, optionally ``kind:detail`` such as
``oxygen:high_flow``) or ``diagnosis`` (``target`` is a disease group, ``LBCL``,
``MM``, ``B-ALL`` or ``other``; the shipped table has none, a site may add them).

A site adds or overrides codes without editing code: extra CSV files with the
same columns are read after the shipped table, and a row for an existing
``(system, code)`` replaces it. Extra files come from the environment variable
``CARTWIN_CODE_MAP`` (paths separated by :data:`os.pathsep`) and then from the
``extra`` argument of :func:`load_code_map`.

Systems are compared after stripping white space and a trailing ``/``; codes
after stripping white space. No other normalisation is done (an OID spelling
of LOINC, ``urn:oid:2.16.840.1.113883.6.1``, needs its own rows).
"""

from __future__ import annotations

import csv
import functools
import io as _stdio
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from cartwin.errors import DataError
from cartwin.record.model import EVENT_KINDS
from cartwin.record.units import quantity_specs

#: Environment variable naming extra mapping tables (``os.pathsep``-separated).
CODE_MAP_ENV = "CARTWIN_CODE_MAP"
#: Columns every mapping table must have.
COLUMNS = ("system", "code", "target_type", "target", "display", "note")
#: Optional columns.
OPTIONAL_COLUMNS = ("lloq",)
#: Disease groups a ``diagnosis`` row may name.
DISEASE_GROUPS = ("LBCL", "MM", "B-ALL", "other")
#: Allowed values of ``target_type``.
TARGET_TYPES = ("observation", "event", "diagnosis")


class CodeMapError(DataError):
    """A mapping table is malformed; the message lists every bad row."""


@dataclass(frozen=True)
class CodeMapping:
    """One row of the mapping table.

    Attributes
    ----------
    system, code : str
        The source coding (normalised, see the module docstring).
    target_type : str
        ``"observation"``, ``"event"`` or ``"diagnosis"``.
    target : str
        Quantity key, ``kind[:detail]`` or disease group, as written.
    display : str
        Human-readable meaning from the table.
    origin : str
        ``file:line`` the row came from.
    lloq : float or None
        Lower limit of quantification in the canonical unit of the quantity
        (observation rows only), ``None`` when not given.
    """

    system: str
    code: str
    target_type: str
    target: str
    display: str
    origin: str
    lloq: float | None = None

    @property
    def kind(self) -> str:
        """Event kind (or quantity / disease group) before any ``:``."""
        return self.target.partition(":")[0]

    @property
    def detail(self) -> str:
        """Event detail after ``:`` (``""`` when none)."""
        return self.target.partition(":")[2]

    @property
    def source_code(self) -> str:
        """``system|code`` as kept for provenance."""
        return f"{self.system}|{self.code}"


@dataclass(frozen=True)
class CodeMap:
    """All mapping rows in force, keyed by normalised ``(system, code)``.

    Attributes
    ----------
    rows : Mapping[tuple[str, str], CodeMapping]
        The rows; later tables have replaced earlier ones.
    sources : tuple[str, ...]
        Tables read, in order (shipped table first).
    """

    rows: Mapping[tuple[str, str], CodeMapping]
    sources: tuple[str, ...]

    def lookup(self, system: str | None, code: str | None) -> CodeMapping | None:
        """Return the row for a coding, or ``None`` when it is not mapped."""
        if not system or not code:
            return None
        return self.rows.get((normalise_system(system), code.strip()))

    def __len__(self) -> int:
        return len(self.rows)


#: What :func:`load_code_map` accepts as site tables.
CodeMapSource = str | os.PathLike | Sequence[str | os.PathLike] | CodeMap


def normalise_system(system: str) -> str:
    """Strip white space and one trailing ``/`` from a code system URI."""
    return system.strip().rstrip("/")


def load_code_map(extra: CodeMapSource | None = None) -> CodeMap:
    """Return the shipped table extended by the site's tables.

    Parameters
    ----------
    extra : path, sequence of paths or CodeMap, optional
        Site tables read after the shipped table and after the files named by
        ``CARTWIN_CODE_MAP``. A :class:`CodeMap` is returned unchanged.

    Raises
    ------
    CodeMapError
        When a table cannot be read or has bad rows; every bad row is named
        with its file, line, column and value.
    """
    if isinstance(extra, CodeMap):
        return extra
    paths = [*_env_paths(), *_as_paths(extra)]
    rows = dict(_shipped_rows())
    sources = ["cartwin/data/codes/codes.csv"]
    for path in paths:
        rows.update(_read_table(_read_text(path), str(path)))
        sources.append(str(path))
    return CodeMap(rows=rows, sources=tuple(sources))


@functools.cache
def _shipped_rows() -> tuple[tuple[tuple[str, str], CodeMapping], ...]:
    text = resources.files("cartwin.data.codes").joinpath("codes.csv")
    table = _read_table(text.read_text(encoding="utf-8"), "codes.csv")
    return tuple(table.items())


def _env_paths() -> list[Path]:
    value = os.environ.get(CODE_MAP_ENV, "")
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
        raise CodeMapError(f"cannot read code map {path}: {exc}") from None


def _read_table(text: str, name: str) -> dict[tuple[str, str], CodeMapping]:
    reader = csv.DictReader(_stdio.StringIO(text))
    missing = [c for c in COLUMNS[:4] if c not in (reader.fieldnames or ())]
    if missing:
        raise CodeMapError(
            f"code map {name}: missing column(s) {', '.join(missing)}; "
            f"the header must be {','.join(COLUMNS)}"
        )
    rows: dict[tuple[str, str], CodeMapping] = {}
    problems: list[str] = []
    for line_no, raw in enumerate(reader, start=2):
        row = {k: (raw.get(k) or "").strip() for k in (*COLUMNS, *OPTIONAL_COLUMNS)}
        problems.extend(_row_problems(row, f"{name}:{line_no}"))
        key = (normalise_system(row["system"]), row["code"])
        if key in rows:
            problems.append(
                f"{name}:{line_no}: duplicate of {rows[key].origin} "
                f"for {key[0]}|{key[1]}"
            )
        rows[key] = CodeMapping(
            system=key[0],
            code=key[1],
            target_type=row["target_type"],
            target=row["target"],
            display=row["display"],
            origin=f"{name}:{line_no}",
            lloq=_lloq(row["lloq"]),
        )
    if problems:
        raise CodeMapError(f"code map {name} has bad rows:\n" + "\n".join(problems))
    return rows


def _row_problems(row: Mapping[str, str], where: str) -> Iterable[str]:
    for column in ("system", "code", "target_type", "target"):
        if not row[column]:
            yield f"{where}: column {column} is empty"
    target_type, target = row["target_type"], row["target"]
    if target_type and target_type not in TARGET_TYPES:
        yield (
            f"{where}: column target_type = {target_type!r}; "
            f"allowed: {', '.join(TARGET_TYPES)}"
        )
    elif target and target_type == "observation" and target not in quantity_specs():
        yield f"{where}: column target = {target!r} is not a quantity in quantities.csv"
    elif target and target_type == "event" and _kind(target) not in EVENT_KINDS:
        yield (
            f"{where}: column target = {target!r} is not an event kind; "
            f"allowed: {', '.join(EVENT_KINDS)} (optionally kind:detail)"
        )
    elif target and target_type == "diagnosis" and target not in DISEASE_GROUPS:
        yield (
            f"{where}: column target = {target!r}; allowed: {', '.join(DISEASE_GROUPS)}"
        )
    yield from _lloq_problems(row, where)


def _kind(target: str) -> str:
    return target.partition(":")[0]


def _lloq(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) and value > 0 else None


def _lloq_problems(row: Mapping[str, str], where: str) -> Iterable[str]:
    text = row["lloq"]
    if not text:
        return
    if row["target_type"] != "observation":
        yield f"{where}: column lloq = {text!r} is allowed on observation rows only"
    elif _lloq(text) is None:
        yield f"{where}: column lloq = {text!r} must be a positive number"
