"""Expression values from AnnData objects, checked, and their quantiles.

Helpers shared by personalisation and antigen read-outs. They accept any
object with the AnnData interface (``X``, ``layers``, ``raw``, ``var``,
``var_names``, ``n_obs``) [1]_ and never modify it.

References
----------
.. [1] Wolf FA, Angerer P, Theis FJ. SCANPY: large-scale single-cell gene
   expression data analysis. Genome Biol 2018;19:15.
   doi:10.1186/s13059-017-1382-0
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cartwin.errors import DataError, MissingInputError
from cartwin.logic.errors import ExpressionDataError


def read_h5ad(path: str | Path) -> Any:
    """Read an ``.h5ad`` file with anndata.

    Raises
    ------
    DataError
        The file is missing or is not an AnnData HDF5 file.
    """
    import anndata

    path = Path(path)
    if not path.is_file():
        raise DataError(f"AnnData file not found: {path}")
    try:
        with warnings.catch_warnings():
            # Files written by anndata < 0.7 lack encoding metadata; they
            # still read correctly, so the format warning is not passed on.
            warnings.simplefilter("ignore", anndata.OldFormatWarning)
            warnings.filterwarnings("ignore", "Moving element from", FutureWarning)
            return anndata.read_h5ad(path)
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise DataError(f"{path} is not a readable .h5ad file: {exc}") from None


def expression_matrix(
    cells: Any, source: str = "X", gene_symbols: str | None = None
) -> tuple[Any, list[str]]:
    """The matrix and gene names to read from ``cells``.

    Parameters
    ----------
    cells : AnnData
        Cells x genes.
    source : str
        ``"X"``, ``"raw"`` (``cells.raw.X``) or the name of a layer.
    gene_symbols : str, optional
        Column of ``var`` holding gene symbols (default: ``var_names``).

    Raises
    ------
    ExpressionDataError
        No cells.
    MissingInputError
        The layer, ``raw`` or the symbol column does not exist.
    """
    if int(getattr(cells, "n_obs", 0)) == 0:
        raise ExpressionDataError("the AnnData has 0 cells; nothing to personalise")
    if source == "raw":
        if getattr(cells, "raw", None) is None:
            raise MissingInputError("source='raw' asked, but the AnnData has no .raw")
        holder, matrix = cells.raw, cells.raw.X
    elif source == "X":
        holder, matrix = cells, cells.X
    else:
        layers = list(cells.layers.keys())
        if source not in layers:
            raise MissingInputError(
                f"AnnData has no layer {source!r}; layers: {layers or 'none'} "
                "(or use source='X' or 'raw')"
            )
        holder, matrix = cells, cells.layers[source]
    if matrix is None:
        raise MissingInputError(f"AnnData source {source!r} holds no matrix")
    return matrix, _gene_names(holder, gene_symbols)


def _gene_names(holder: Any, gene_symbols: str | None) -> list[str]:
    if gene_symbols is None:
        return [str(v) for v in holder.var_names]
    if gene_symbols not in holder.var.columns:
        raise MissingInputError(
            f"AnnData var has no column {gene_symbols!r}; columns: "
            f"{list(holder.var.columns) or 'none'}"
        )
    return [str(v) for v in holder.var[gene_symbols]]


def gene_values(matrix: Any, columns: Mapping[str, int]) -> np.ndarray:
    """Dense float64 array (cells x genes) of the given columns, checked.

    Raises
    ------
    ExpressionDataError
        A value is NaN or infinite (the message names the gene and count).
    """
    index = list(columns.values())
    block = matrix[:, index]
    block = block.toarray() if hasattr(block, "toarray") else np.asarray(block)
    values = np.asarray(block, dtype=np.float64).reshape(-1, len(index))
    bad = ~np.isfinite(values)
    if bad.any():
        counts = bad.sum(axis=0)
        report = ", ".join(
            f"{g} ({int(c)} cells)" for g, c in zip(columns, counts) if c
        )
        raise ExpressionDataError(f"non-finite expression values in gene(s) {report}")
    return values


def lower_quantiles(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per-gene quantile of each value in the reference distribution.

    For a value ``x`` of gene ``g``: the fraction of reference cells with a
    strictly lower value of ``g``, divided by ``(n_ref - 1)/n_ref`` so that
    the highest reference value maps to 1; clipped to [0, 1]. Cells at the
    reference minimum (e.g. not detected) get 0. The result is unchanged by
    any increasing per-gene transform (log, scaling, z-scores).
    """
    if reference.shape[0] == 0:
        raise ExpressionDataError("the reference AnnData has 0 cells")
    denominator = max(reference.shape[0] - 1, 1)
    out = np.empty_like(values, dtype=np.float64)
    for j in range(values.shape[1]):
        ranked = np.sort(reference[:, j])
        out[:, j] = np.searchsorted(ranked, values[:, j], side="left") / denominator
    return np.clip(out, 0.0, 1.0)


def group_labels(cells: Any, groupby: str | None) -> np.ndarray:
    """Group label of each cell (``obs[groupby]``; one group ``"all"``).

    Raises
    ------
    MissingInputError
        ``groupby`` is not an ``obs`` column.
    """
    n = int(cells.n_obs)
    if groupby is None:
        return np.full(n, "all", dtype=object)
    if groupby not in cells.obs.columns:
        raise MissingInputError(
            f"AnnData obs has no column {groupby!r}; columns: {list(cells.obs.columns)}"
        )
    return np.asarray(cells.obs[groupby].astype(str), dtype=object)


def select_cells(cells: Any, column: str, values: Sequence[str]) -> Any:
    """The cells whose ``obs[column]`` is one of ``values`` (a view).

    Raises
    ------
    MissingInputError
        ``column`` is not an ``obs`` column.
    ExpressionDataError
        No cell has one of the values.
    """
    labels = group_labels(cells, column)
    mask = np.isin(labels, list(values))
    if not mask.any():
        raise ExpressionDataError(
            f"no cell has obs[{column!r}] in {list(values)}; values present: "
            f"{sorted(set(labels))}"
        )
    return cells[mask]
