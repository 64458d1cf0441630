"""Gene-to-node map and gene-symbol matching for personalisation.

Two shipped tables (``cartwin/data/logic``) are data, not code, so a site can
extend them:

* ``tcell_gene_map.csv`` -- ``node,gene,relation,source``: which genes inform
  each node of the T-cell model. ``relation`` is ``encodes`` (the gene codes
  for the node's protein), ``target`` (a well-known transcriptional target
  used as a read-out) or ``marker`` (a phenotype marker of the same state);
  ``source`` is the DOI supporting it.
* ``gene_aliases.csv`` -- ``symbol,alias``: approved symbols and common
  aliases or previous symbols (cf. HGNC [1]_), e.g. ``PDCD1`` / ``PD-1``.

:func:`match_genes` finds each wanted gene among a data set's gene names,
ignoring case and accepting aliases. The approved symbol wins over an alias;
two columns that both match a gene only through aliases, or that differ only
in case, are an error (the choice would be arbitrary).

References
----------
.. [1] Seal RL, Braschi B, Gray K, et al. Genenames.org: the HGNC resources
   in 2023. Nucleic Acids Res 2023;51(D1):D1003-D1009. doi:10.1093/nar/gkac888
"""

from __future__ import annotations

import csv
import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from types import MappingProxyType

from cartwin.errors import DataError
from cartwin.logic.errors import ExpressionDataError

_RELATIONS = frozenset({"encodes", "target", "marker"})


@dataclass(frozen=True)
class GeneMapEntry:
    """One row of the gene map: ``gene`` informs ``node``."""

    node: str
    gene: str
    relation: str
    source: str


@dataclass(frozen=True)
class GeneMap:
    """Genes per model node, plus the alias table used to find them."""

    entries: tuple[GeneMapEntry, ...]
    aliases: Mapping[str, tuple[str, ...]]

    def genes_of(self, node: str) -> tuple[str, ...]:
        """Approved symbols mapped to ``node``, in table order."""
        return tuple(e.gene for e in self.entries if e.node == node)

    @property
    def nodes(self) -> tuple[str, ...]:
        """Nodes that have at least one gene, in table order."""
        return tuple(dict.fromkeys(e.node for e in self.entries))

    @property
    def genes(self) -> tuple[str, ...]:
        """All mapped genes, without repeats."""
        return tuple(dict.fromkeys(e.gene for e in self.entries))


def _data_file(name: str) -> Path:
    return Path(str(resources.files("cartwin.data.logic").joinpath(name)))


def load_gene_map(
    path: str | Path | None = None, aliases: str | Path | None = None
) -> GeneMap:
    """Read a gene map and an alias table (default: the shipped ones).

    The shipped tables are read once per process (the result is immutable).

    Raises
    ------
    DataError
        A file is missing, lacks a column, or has an unknown relation.
    """
    if path is None and aliases is None:
        return _shipped_gene_map()
    return _read_gene_map(path, aliases)


@functools.cache
def _shipped_gene_map() -> GeneMap:
    return _read_gene_map(None, None)


def _read_gene_map(path: str | Path | None, aliases: str | Path | None) -> GeneMap:
    rows = _read_csv(
        Path(path) if path else _data_file("tcell_gene_map.csv"),
        ("node", "gene", "relation", "source"),
    )
    entries = []
    for number, row in rows:
        if row["relation"] not in _RELATIONS:
            raise DataError(
                f"gene map line {number}: relation {row['relation']!r}; allowed: "
                f"{', '.join(sorted(_RELATIONS))}"
            )
        entries.append(
            GeneMapEntry(
                row["node"], row["gene"].upper(), row["relation"], row["source"]
            )
        )
    table = aliases or _data_file("gene_aliases.csv")
    return GeneMap(
        tuple(entries), _alias_table(_read_csv(Path(table), ("symbol", "alias")))
    )


def _read_csv(path: Path, columns: Sequence[str]) -> list[tuple[int, dict[str, str]]]:
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in columns if c not in (reader.fieldnames or [])]
            if missing:
                raise DataError(f"{path}: missing column(s) {', '.join(missing)}")
            return [
                (n + 2, {c: (row[c] or "").strip() for c in columns})
                for n, row in enumerate(reader)
            ]
    except FileNotFoundError:
        raise DataError(f"gene table not found: {path}") from None


def _alias_table(
    rows: Iterable[tuple[int, dict[str, str]]],
) -> Mapping[str, tuple[str, ...]]:
    table: dict[str, list[str]] = {}
    for _, row in rows:
        table.setdefault(row["symbol"].upper(), []).append(row["alias"].upper())
    return MappingProxyType({k: tuple(v) for k, v in table.items()})


@dataclass(frozen=True)
class GeneMatch:
    """Where each wanted gene was found in a data set.

    Attributes
    ----------
    columns : Mapping[str, int]
        Approved symbol -> column index in the data set.
    names : Mapping[str, str]
        Approved symbol -> the name as written in the data set.
    missing : tuple of str
        Wanted genes not found, in the order asked.
    """

    columns: Mapping[str, int]
    names: Mapping[str, str]
    missing: tuple[str, ...]


def match_genes(
    var_names: Sequence[str],
    wanted: Iterable[str],
    aliases: Mapping[str, tuple[str, ...]],
) -> GeneMatch:
    """Find ``wanted`` approved symbols among ``var_names``.

    Raises
    ------
    ExpressionDataError
        Two gene names equal up to case, or two aliases of the same gene.
    """
    by_upper: dict[str, int] = {}
    for index, name in enumerate(var_names):
        key = str(name).strip().upper()
        if key in by_upper:
            first = var_names[by_upper[key]]
            raise ExpressionDataError(
                f"gene names {first!r} and {name!r} are the same when case is "
                "ignored; rename one of them"
            )
        by_upper[key] = index
    columns: dict[str, int] = {}
    missing: list[str] = []
    for gene in dict.fromkeys(g.upper() for g in wanted):
        index = _find(gene, by_upper, aliases.get(gene, ()), var_names)
        if index is None:
            missing.append(gene)
        else:
            columns[gene] = index
    names = {g: str(var_names[i]) for g, i in columns.items()}
    return GeneMatch(MappingProxyType(columns), MappingProxyType(names), tuple(missing))


def _find(
    gene: str,
    by_upper: Mapping[str, int],
    aliases: tuple[str, ...],
    var_names: Sequence[str],
) -> int | None:
    if gene in by_upper:
        return by_upper[gene]
    hits = [by_upper[a] for a in aliases if a in by_upper]
    if len(hits) > 1:
        found = ", ".join(repr(str(var_names[i])) for i in hits)
        raise ExpressionDataError(
            f"gene {gene} matches several columns through aliases ({found}); "
            "keep one or rename it to the approved symbol"
        )
    return hits[0] if hits else None
