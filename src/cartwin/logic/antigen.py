"""Target-antigen expression of tumour cells and antigen-escape risk.

Loss or low density of the CAR target (CD19, BCMA) is a main route of
relapse after CAR T-cell therapy [1]_ [2]_ [3]_, and CAR T cells need a
minimum antigen density to act [4]_. From a tumour's single-cell RNA data or
flow cytometry, :func:`antigen_from_anndata` and :func:`antigen_from_flow`
count antigen-negative and antigen-low cells with an explicit threshold rule
and return an :class:`AntigenProfile`.

Threshold rule
--------------
For each cell with value ``x`` (same unit as the thresholds):

* negative: ``x <= negative_threshold``;
* low: ``negative_threshold < x < low_threshold`` (only when a low threshold
  is given);
* positive otherwise.

Defaults: single-cell RNA, ``negative_threshold = 0`` on a non-negative
normalised matrix (no transcript detected), no low class (RNA does not
measure surface density). Flow: the thresholds must be given, in the
table's unit (MFI or antibody-binding capacity); a negative threshold is
usually set from a negative control, e.g. with :func:`threshold_from_control`.

Escape risk
-----------
``escape_risk`` is the fraction of antigen-low or -negative cells, the part of
the tumour the CAR cannot target, with a Wilson 95% interval [5]_ for the
sampling error of the cell count. The CAR T / tumour model will read it (as
its initial antigen-negative fraction) once the model graph has that edge; the
value is also returned as a plain dict by :meth:`AntigenProfile.as_dict`.

Known limits
------------
- scRNA drop-out makes some antigen-positive cells look negative, so the RNA
  estimate is an upper bound of the true negative fraction.
- Antigen escape by epitope loss with retained expression (e.g. CD19 exon 2
  splicing [2]_) is invisible to expression counts.

References
----------
.. [1] Majzner RG, Mackall CL. Tumor antigen escape from CAR T-cell therapy.
   Cancer Discov 2018;8(10):1219-1226. doi:10.1158/2159-8290.CD-18-0442
.. [2] Sotillo E, Barrett DM, Black KL, et al. Convergence of acquired
   mutations and alternative splicing of CD19 enables resistance to CART-19
   immunotherapy. Cancer Discov 2015;5(12):1282-1295.
   doi:10.1158/2159-8290.CD-15-1020
.. [3] Samur MK, Fulciniti M, Aktas Samur A, et al. Biallelic loss of BCMA as
   a resistance mechanism to CAR T cell therapy in a patient with multiple
   myeloma. Nat Commun 2021;12:868. doi:10.1038/s41467-021-21177-5
.. [4] Majzner RG, Rietberg SP, Sotillo E, et al. Tuning the antigen density
   requirement for CAR T-cell activity. Cancer Discov 2020;10(5):702-723.
   doi:10.1158/2159-8290.CD-19-0945
.. [5] Wilson EB. Probable inference, the law of succession, and statistical
   inference. J Am Stat Assoc 1927;22(158):209-212. doi:10.1080/01621459.1927.10502953
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cartwin.errors import DataError, MissingInputError
from cartwin.logic.errors import ExpressionDataError
from cartwin.logic.expression import expression_matrix, gene_values
from cartwin.logic.genes import load_gene_map, match_genes

_Z95 = 1.959963984540054


@dataclass(frozen=True)
class AntigenProfile:
    """Antigen-negative and -low fractions of a tumour sample.

    Attributes
    ----------
    antigen : str
        Approved gene symbol (``CD19``, ``TNFRSF17`` for BCMA).
    n_cells, n_negative, n_low : int
        Cells counted, negative, low (0 without a low threshold).
    negative_threshold, low_threshold : float, float or None
        Thresholds of the rule (module notes), in ``unit``.
    unit : str
        Unit of the values and thresholds.
    escape_risk : float
        ``(n_negative + n_low) / n_cells``.
    escape_risk_ci95 : tuple of float
        Wilson 95% interval of ``escape_risk``.
    """

    antigen: str
    n_cells: int
    n_negative: int
    n_low: int
    negative_threshold: float
    low_threshold: float | None
    unit: str
    escape_risk: float
    escape_risk_ci95: tuple[float, float]

    @property
    def fraction_negative(self) -> float:
        """Fraction of antigen-negative cells."""
        return self.n_negative / self.n_cells

    @property
    def fraction_low(self) -> float:
        """Fraction of antigen-low cells (0 without a low threshold)."""
        return self.n_low / self.n_cells

    def as_dict(self) -> dict[str, Any]:
        """Plain-dict summary, for the tumour model and for JSON."""
        return {
            "antigen": self.antigen,
            "n_cells": self.n_cells,
            "fraction_negative": self.fraction_negative,
            "fraction_low": self.fraction_low,
            "escape_risk": self.escape_risk,
            "escape_risk_ci95": list(self.escape_risk_ci95),
            "rule": self.rule,
        }

    @property
    def rule(self) -> str:
        """The threshold rule in words."""
        text = f"negative if value <= {self.negative_threshold:g} {self.unit}"
        if self.low_threshold is not None:
            text += f"; low if below {self.low_threshold:g} {self.unit}"
        return text


def wilson_interval(successes: int, trials: int) -> tuple[float, float]:
    """Wilson 95% score interval of a binomial proportion [5]_."""
    if trials <= 0:
        raise ExpressionDataError("a proportion needs at least one cell")
    p = successes / trials
    z2 = _Z95**2
    centre = (p + z2 / (2 * trials)) / (1 + z2 / trials)
    half = (
        _Z95
        * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials**2))
        / (1 + z2 / trials)
    )
    return max(0.0, centre - half), min(1.0, centre + half)


def antigen_profile(
    values: np.ndarray,
    antigen: str,
    *,
    negative_threshold: float,
    low_threshold: float | None = None,
    unit: str,
) -> AntigenProfile:
    """Apply the threshold rule to per-cell antigen values.

    Raises
    ------
    ExpressionDataError
        No cells, a non-finite value, or thresholds out of order.
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size == 0:
        raise ExpressionDataError(f"no tumour cells with a {antigen} value")
    if not np.isfinite(values).all():
        bad = int((~np.isfinite(values)).sum())
        raise ExpressionDataError(f"{antigen}: {bad} non-finite value(s)")
    if low_threshold is not None and not low_threshold > negative_threshold:
        raise ExpressionDataError(
            f"low_threshold={low_threshold} must be above negative_threshold="
            f"{negative_threshold}"
        )
    negative = int((values <= negative_threshold).sum())
    low = 0
    if low_threshold is not None:
        low = int(((values > negative_threshold) & (values < low_threshold)).sum())
    n = int(values.size)
    return AntigenProfile(
        antigen,
        n,
        negative,
        low,
        float(negative_threshold),
        low_threshold,
        unit,
        (negative + low) / n,
        wilson_interval(negative + low, n),
    )


def antigen_from_anndata(
    cells: Any,
    antigen: str = "CD19",
    *,
    source: str = "X",
    gene_symbols: str | None = None,
    negative_threshold: float = 0.0,
    low_threshold: float | None = None,
) -> AntigenProfile:
    """Antigen profile of tumour cells from single-cell RNA data.

    ``antigen`` may be an approved symbol or an alias (``BCMA``). The matrix
    must be non-negative (counts or log-normalised, not scaled).

    Raises
    ------
    MissingInputError
        The antigen gene (or the layer) is not in the data.
    ExpressionDataError
        No cells, non-finite or negative values.
    """
    symbol = _approved(antigen)
    matrix, names = expression_matrix(cells, source, gene_symbols)
    aliases = load_gene_map().aliases
    match = match_genes(names, [symbol], aliases)
    if not match.columns:
        raise MissingInputError(
            f"antigen {symbol} not in the data (looked for {symbol} and "
            f"{', '.join(aliases.get(symbol, ())) or 'no alias'}; source {source!r})"
        )
    values = gene_values(matrix, match.columns)[:, 0]
    if (values < 0).any():
        raise ExpressionDataError(
            f"{symbol} has negative values in source {source!r} (scaled data?); "
            "use counts or log-normalised values, e.g. source='raw'"
        )
    return antigen_profile(
        values,
        symbol,
        negative_threshold=negative_threshold,
        low_threshold=low_threshold,
        unit=f"expression ({source})",
    )


def antigen_from_flow(
    table: str | Path,
    antigen: str = "CD19",
    *,
    negative_threshold: float,
    low_threshold: float | None = None,
    unit: str = "MFI",
) -> AntigenProfile:
    """Antigen profile from a flow-cytometry table (CSV, one row per cell).

    The antigen column is found by name, case-insensitively, with aliases
    (``BCMA`` for ``TNFRSF17``).

    Raises
    ------
    DataError
        The file is missing or has no antigen column.
    ExpressionDataError
        No rows, a value that is not a finite number.
    """
    path = Path(table)
    if not path.is_file():
        raise DataError(f"flow table not found: {path}")
    symbol = _approved(antigen)
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, [])
        rows = list(reader)
    match = match_genes(header, [symbol], load_gene_map().aliases)
    if not match.columns:
        raise DataError(f"{path}: no column for {symbol} (columns: {header})")
    column = match.columns[symbol]
    values = [_number(row, column, n + 2, path) for n, row in enumerate(rows)]
    return antigen_profile(
        np.array(values),
        symbol,
        negative_threshold=negative_threshold,
        low_threshold=low_threshold,
        unit=unit,
    )


def threshold_from_control(control: np.ndarray, quantile: float = 0.99) -> float:
    """Negative threshold from negative-control values (e.g. FMO or isotype).

    Returns the ``quantile`` of the control distribution (default: 99th
    percentile, so about 1% of true negatives are called positive).
    """
    control = np.asarray(control, dtype=np.float64).ravel()
    if control.size == 0 or not np.isfinite(control).all():
        raise ExpressionDataError("negative control needs finite values")
    if not 0.0 < quantile < 1.0:
        raise ExpressionDataError(f"quantile={quantile}; must be in (0, 1)")
    return float(np.quantile(control, quantile))


def _approved(antigen: str) -> str:
    upper = antigen.strip().upper()
    for symbol, aliases in load_gene_map().aliases.items():
        if upper in aliases:
            return symbol
    return upper


def _number(row: list[str], column: int, line: int, path: Path) -> float:
    try:
        value = float(row[column])
    except (IndexError, ValueError):
        cell = row[column] if column < len(row) else ""
        raise ExpressionDataError(
            f"{path}:{line}: antigen value {cell!r} is not a number"
        )
    if not math.isfinite(value):
        raise ExpressionDataError(f"{path}:{line}: antigen value {value} is not finite")
    return value
