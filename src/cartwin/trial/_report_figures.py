"""Figures of the in silico trial report, drawn with matplotlib as inline SVG.

Private helpers of :mod:`cartwin.trial.report`, which builds the tables and
texts of each section and calls one ``plot_*`` function per figure: arm bars,
Kaplan-Meier curves with numbers at risk, forest plot, validation intervals,
kinetics box plots and CRS/ICANS grade bars. Each returns the SVG markup of
:func:`cartwin.report.plots.figure_svg` (fixed hash salt, no date, text kept as
text and XML-escaped), so the same input gives the same bytes, with ``role="img"``
and the caller's text alternative ``alt``.

Text from the user's trial file (arm names) passes through :func:`_tex` so that a
``$`` never starts matplotlib's mathtext. This module imports nothing from
:mod:`cartwin.trial.report`; the report passes labels in and shares the small
value readers :func:`as_dict` and :func:`number`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import matplotlib
import numpy as np
from markupsafe import Markup
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FormatStrFormatter, NullLocator

from cartwin.report import plots

if TYPE_CHECKING:
    from cartwin.trial.report import _TrialData

#: Days per month (365.25 / 12) for survival axes read in months.
DAYS_PER_MONTH = 30.4375
#: How observed (published) arms are named in tables and legends.
OBSERVED_LABEL = "observed (published)"


# -- values and figure helpers ----------------------------------------------------
def as_dict(value: Any) -> Mapping:
    """``value`` if it is a mapping (dict, read-only mapping), else ``{}``."""
    return value if isinstance(value, Mapping) else {}


def number(value: Any) -> float | None:
    """A finite float, or ``None`` (bools, text, NaN and infinities too)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _tex(text: Any) -> str:
    """Text from the user safe for matplotlib: ``$`` never starts mathtext."""
    return str(text).replace("$", r"\$")


def _colours(names: Sequence[str]) -> dict[str, Any]:
    cycle = matplotlib.colormaps["tab10"].colors
    return {name: cycle[i % len(cycle)] for i, name in enumerate(names)}


def _svg(fig: Figure, prefix: str, alt: str) -> Markup:
    return Markup(plots.figure_svg(fig, prefix, alt))


def _figure(rows: int, cols: int, size: tuple[float, float], **kwargs):
    """A figure and its axes in the twin report's style (call inside ``_style``)."""
    fig = Figure(figsize=size, layout="constrained")
    return fig, fig.subplots(rows, cols, squeeze=False, **kwargs)


def _style():
    return matplotlib.rc_context(plots.RC)


# -- arm comparison -------------------------------------------------------------
def _estimate(data: _TrialData, arm: str, endpoint: str) -> float | None:
    return number(as_dict(as_dict(data.arm_results.get(arm)).get(endpoint))
                  .get("estimate"))


def plot_arm_bars(data: _TrialData, endpoints: list[str], arms: list[str],
                  labels: list[str], *, alt: str) -> Markup:
    """Grouped bars of proportions with their intervals, observed arms hatched.

    Parameters
    ----------
    data : _TrialData
        The report's view of the result (arm results, observed arms, CI label).
    endpoints, arms : list of str
        Proportion endpoints (x axis) and arms (bars) to draw; arms without any
        estimate get no slot, endpoints without any estimate a note.
    labels : list of str
        Plain name of each endpoint, for the x axis.
    alt : str
        Text alternative of the figure.
    """
    arms = [a for a in arms if any(_estimate(data, a, e) is not None
                                   for e in endpoints)]
    colours, width = _colours(data.arm_names()), 0.8 / max(len(arms), 1)
    with _style():
        fig, axes = _figure(1, 1, (7.2, 3.6))
        ax = axes[0, 0]
        for index, arm in enumerate(arms):
            _draw_arm_bars(ax, data, arm, endpoints, index * width - 0.4 + width / 2,
                           width, colours[arm])
        for index, endpoint in enumerate(endpoints):
            if all(_estimate(data, a, endpoint) is None for a in arms):
                ax.text(index, 2, "not available", ha="center", va="bottom",
                        rotation=90, color="gray", fontsize=7)
        ax.set_xticks(range(len(endpoints)),
                      [label.replace(" (", "\n(") for label in labels],
                      rotation=30, ha="right")
        ax.set_xlim(-0.6, len(endpoints) - 0.4)
        ax.set_ylim(0, 100)
        ax.set_ylabel(f"patients (%), bars: {data.ci}")
        plots.figure_legend(fig, [ax], ncols=3)
    return _svg(fig, "arms", alt)


def _draw_arm_bars(ax, data: _TrialData, arm: str, endpoints: list[str],
                   shift: float, width: float, colour) -> None:
    results = as_dict(data.arm_results.get(arm))
    points = [(i, as_dict(results.get(e))) for i, e in enumerate(endpoints)]
    points = [(i, r) for i, r in points if number(r.get("estimate")) is not None]
    if not points:
        return
    x = np.array([i for i, _ in points]) + shift
    y = np.array([r["estimate"] for _, r in points], dtype=float) * 100
    low = np.array([number(r.get("low")) or np.nan for _, r in points]) * 100
    high = np.array([number(r.get("high")) or np.nan for _, r in points]) * 100
    observed = data.is_observed(arm)
    label = _tex(f"{arm} — {OBSERVED_LABEL}" if observed else arm)
    ax.bar(x, y, width * 0.95, color=colour, alpha=0.45 if observed else 0.85,
           hatch="//" if observed else None, edgecolor="0.2", lw=0.5, label=label)
    errors = np.array([np.clip(y - low, 0, None), np.clip(high - y, 0, None)])
    ax.errorbar(x, y, yerr=np.nan_to_num(errors), fmt="none", ecolor="black",
                elinewidth=0.8, capsize=2)


# -- survival -----------------------------------------------------------------------
def _km_arrays(curve: dict) -> tuple[np.ndarray, ...] | None:
    arrays = [np.asarray(curve.get(k) or [], dtype=float)
              for k in ("t_days", "survival", "low", "high")]
    if not arrays[0].size or any(a.shape != arrays[0].shape for a in arrays[:2]):
        return None
    if any(a.shape != arrays[0].shape for a in arrays[2:]):
        arrays[2:] = [np.full(arrays[0].shape, np.nan)] * 2
    return tuple(arrays)


def plot_km(data: _TrialData, arms: list[str], curves: dict, ticks: list[float],
            at_risk: list[dict], *, alt: str) -> Markup:
    """Kaplan-Meier curves of PFS with bands and medians, numbers at risk below.

    Parameters
    ----------
    data : _TrialData
        The report's view of the result (arm names, PFS medians).
    arms : list of str
        Arms with a curve in ``curves``.
    curves : dict
        Per arm: ``t_days`` (days since infusion), ``survival``, ``low``,
        ``high`` (fractions), as :func:`cartwin.trial.endpoints.compute_endpoints`
        gives them.
    ticks : list of float
        Tick positions, days since infusion (drawn in months).
    at_risk : list of dict
        Per arm: ``arm`` and ``counts`` (patients at risk at each tick).
    alt : str
        Text alternative of the figure.
    """
    colours = _colours(data.arm_names())
    with _style():
        fig, axes = _figure(2, 1, (7.2, 3.6 + 0.2 * len(arms)),
                            gridspec_kw={"height_ratios": [3.2, 0.3 + 0.2 * len(arms)]})
        ax, table = axes[0, 0], axes[1, 0]
        for arm in arms:
            _draw_km(ax, data, arm, _km_arrays(curves[arm]), colours[arm])
        ax.axhline(0.5, color="0.5", ls=":", lw=0.8)
        ax.set_ylim(0, 1.02)
        ax.set_xlim(0, ticks[-1] / DAYS_PER_MONTH if ticks else None)
        ax.set_xticks([t / DAYS_PER_MONTH for t in ticks])
        ax.set_xlabel("months since CAR T infusion")
        ax.set_ylabel("progression-free (fraction)")
        plots.legend(ax, loc="upper right")
        _draw_at_risk(table, ax, at_risk, ticks, colours)
    return _svg(fig, "km", alt)


def _draw_km(ax, data: _TrialData, arm: str, arrays, colour) -> None:
    if arrays is None:
        return
    t, survival, low, high = arrays
    months = t / DAYS_PER_MONTH
    if np.isfinite(low).any() and np.isfinite(high).any():
        ax.fill_between(months, low, high, step="post", color=colour, alpha=0.18, lw=0)
    ax.step(months, survival, where="post", color=colour, lw=1.5, label=_tex(arm))
    pfs = as_dict(as_dict(data.arm_results.get(arm)).get("pfs"))
    median = number(pfs.get("median_days"))
    if median is not None:
        x = median / DAYS_PER_MONTH
        ax.plot([x, x], [0, 0.5], color=colour, ls="--", lw=0.8)
        ax.plot([x], [0.5], "o", color=colour, ms=4)


def _draw_at_risk(ax, plot_ax, at_risk: list[dict], ticks: list[float],
                  colours: dict) -> None:
    """Numbers at risk as text under the curves, one line per arm."""
    ax.set_xlim(plot_ax.get_xlim())
    ax.set_ylim(-0.5, max(len(at_risk), 1) - 0.5)
    ax.axis("off")
    ax.set_title("number at risk", loc="left", fontsize=7, pad=2)
    for row, item in enumerate(at_risk):
        y = len(at_risk) - 1 - row
        if item["counts"]:
            ax.text(-0.03, y, _tex(item["arm"]), ha="right", va="center", fontsize=7,
                    color=colours[item["arm"]], transform=ax.get_yaxis_transform())
        for tick, count in zip(ticks, item["counts"]):
            ax.text(tick / DAYS_PER_MONTH, y, f"{count}", ha="center", va="center",
                    fontsize=7, color=colours[item["arm"]])


# -- forest plot ----------------------------------------------------------------------
def plot_forest(differences: list[dict], ratios: list[dict], *,
                row_label: Callable[[Mapping], str], ci: str, alt: str) -> Markup:
    """Forest plot: risk differences (percentage points), hazard ratios (log axis).

    Parameters
    ----------
    differences, ratios : list of dict
        Comparisons against the reference arm (``estimate``, ``low``, ``high``;
        differences as fractions); an empty list draws no panel.
    row_label : callable
        Label of one comparison on the y axis.
    ci : str
        Interval label, e.g. ``95% CI``.
    alt : str
        Text alternative of the figure.
    """
    panels = [(rows, ratio) for rows, ratio in ((differences, False), (ratios, True))
              if rows]
    heights = [len(rows) + 1.5 for rows, _ in panels]
    with _style():
        fig, axes = _figure(len(panels), 1, (7.2, 0.4 * sum(heights) + 0.4),
                            gridspec_kw={"height_ratios": heights})
        for ax, (rows, ratio) in zip(axes[:, 0], panels):
            _draw_forest(ax, rows, ratio, ci, row_label)
    return _svg(fig, "forest", alt)


def _draw_forest(ax, rows: list[dict], ratio: bool, ci: str,
                 row_label: Callable[[Mapping], str]) -> None:
    scale = 1.0 if ratio else 100.0
    labels = []
    for y, item in enumerate(rows):
        labels.append(_tex(row_label(item)))
        estimate, low, high = (number(item.get(k))
                               for k in ("estimate", "low", "high"))
        if estimate is None or (ratio and estimate <= 0):
            ax.text(0.02, y, "not available", va="center", color="gray", fontsize=7,
                    transform=ax.get_yaxis_transform())
            continue
        if low is not None and high is not None and (not ratio or low > 0):
            ax.plot([low * scale, high * scale], [y, y], color="black", lw=1.2)
        ax.plot([estimate * scale], [y], "s", color="tab:blue", ms=5)
    ax.axvline(1.0 if ratio else 0.0, color="tab:red", ls="--", lw=0.9)
    ax.set_yticks(range(len(rows)), labels)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    if ratio:
        _log_ratio_axis(ax)
        ax.set_xlabel(f"hazard ratio (log scale), {ci}")
    else:
        ax.set_xlabel(f"arm minus reference (percentage points), {ci}")


def _log_ratio_axis(ax) -> None:
    """Log x axis with plain ratio ticks (0.5, 1, 2), always showing 1."""
    low, high = ax.get_xlim()
    low, high = min(low, 0.9), max(high, 1.1)
    ax.set_xscale("log")
    ax.set_xlim(low, high)
    ticks = [t for t in (0.1, 0.2, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 4.0, 10.0)
             if low <= t <= high]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.xaxis.set_minor_locator(NullLocator())


# -- validation -----------------------------------------------------------------------
def plot_validation(rows: list[dict], names: list[str], calibration: list[bool], *,
                    alt: str) -> Markup:
    """Published against simulated proportions with their intervals.

    Parameters
    ----------
    rows : list of dict
        Validation rows of proportion endpoints (``published``, ``simulated``
        and their ``_low``/``_high``, fractions).
    names : list of str
        Plain name of each row's endpoint.
    calibration : list of bool
        Whether each row was a calibration target: its label says so and its
        simulated marker is open.
    alt : str
        Text alternative of the figure.
    """
    with _style():
        fig, axes = _figure(1, 1, (7.2, 0.4 * len(rows) + 1.3))
        ax = axes[0, 0]
        styles = (("published", -0.15, "s", "black", "published"),
                  ("simulated", 0.15, "o", "tab:blue", "simulated"))
        for style in styles:
            key, shift, _, _, label = style
            for y, (row, calibrated) in enumerate(zip(rows, calibration)):
                _draw_interval(ax, row, y + shift, style,
                               label=label if y == 0 else None,
                               open_marker=calibrated and key == "simulated")
        labels = [name + (" (calibration target)" if calibrated else "")
                  for name, calibrated in zip(names, calibration)]
        ax.set_yticks(range(len(rows)), [_tex(label) for label in labels])
        ax.set_ylim(len(rows) - 0.5, -0.5)
        ax.set_xlim(0, 100)
        ax.set_xlabel("patients (%), with intervals")
        plots.legend(ax, loc="lower right")
    return _svg(fig, "validation", alt)


def _draw_interval(ax, row: dict, y: float, style: tuple, *, label: str | None,
                   open_marker: bool) -> None:
    key, _, marker, colour, _ = style
    value = number(row.get(key))
    low, high = number(row.get(f"{key}_low")), number(row.get(f"{key}_high"))
    if low is not None and high is not None:
        ax.plot([low * 100, high * 100], [y, y], color=colour, lw=1.2)
    if value is not None:
        ax.plot([value * 100], [y], marker, color=colour, ms=5, label=label,
                mfc="white" if open_marker else colour)


# -- kinetics and grades --------------------------------------------------------------
def plot_kinetics(arms: list[str], stats: dict, columns: Sequence[tuple], *,
                  alt: str) -> Markup:
    """Horizontal box plots, one panel per kinetics column, one box per arm.

    Parameters
    ----------
    arms : list of str
        Simulated arms, top to bottom.
    stats : dict
        ``(arm, column)`` to the box statistics of :meth:`Axes.bxp`, or None
        (drawn as "no data").
    columns : sequence of tuple
        ``(column, title, unit, log axis)`` of each panel.
    alt : str
        Text alternative of the figure.
    """
    with _style():
        fig, axes = _figure(1, 2, (7.2, 2.2 + 0.3 * len(arms)))
        for ax, (column, title, unit, log) in zip(axes[0], columns):
            present = [(i, stats[arm, column]) for i, arm in enumerate(arms)
                       if stats[arm, column] is not None]
            if present:
                ax.bxp([s for _, s in present], positions=[i for i, _ in present],
                       orientation="horizontal", showfliers=False, widths=0.5)
            for i, arm in enumerate(arms):
                if stats[arm, column] is None:
                    ax.text(0.02, i, "no data", va="center", color="gray",
                            transform=ax.get_yaxis_transform())
            ax.set_yticks(range(len(arms)), [_tex(a) for a in arms])
            ax.set_ylim(len(arms) - 0.5, -0.5)
            if log and present:
                ax.set_xscale("log")
            ax.set_title(title, loc="left")
            ax.set_xlabel(unit)
        axes[0, 1].tick_params(labelleft=False)
    return _svg(fig, "kinetics", alt)


def plot_grades(arms: list[str], shares: dict, *, alt: str) -> Markup:
    """Stacked bars of the CRS and ICANS grade (0 to 4) shares per arm.

    Parameters
    ----------
    arms : list of str
        Simulated arms, top to bottom.
    shares : dict
        ``(arm, "crs" | "icans")`` to five shares (fractions) or None.
    alt : str
        Text alternative of the figure.
    """
    colours = matplotlib.colormaps["YlOrRd"](np.linspace(0.08, 0.95, 5))
    with _style():
        fig, axes = _figure(1, 2, (7.2, 2.2 + 0.3 * len(arms)), sharey=True)
        for ax, kind in zip(axes[0], ("crs", "icans")):
            left = np.zeros(len(arms))
            for grade in range(5):
                width = np.array([100 * (shares[a, kind][grade]
                                         if shares[a, kind] is not None else 0.0)
                                  for a in arms])
                ax.barh(range(len(arms)), width, left=left, color=colours[grade],
                        edgecolor="0.3", lw=0.4, label=f"grade {grade}")
                left += width
            for i, arm in enumerate(arms):
                if shares[arm, kind] is None:
                    ax.text(2, i, "no data", va="center", color="gray")
            ax.set_yticks(range(len(arms)), [_tex(a) for a in arms])
            ax.set_ylim(len(arms) - 0.5, -0.5)
            ax.set_xlim(0, 100)
            ax.set_title(f"{kind.upper()} grade (ASTCT 2019)", loc="left")
            ax.set_xlabel("patients (%)")
        plots.figure_legend(fig, axes[0, :1], ncols=5)
    return _svg(fig, "grades", alt)
