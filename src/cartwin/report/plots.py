"""Static plots of the HTML report, drawn with matplotlib as inline SVG.

Figures are made with :class:`matplotlib.figure.Figure` directly (no pyplot,
no global backend switch, no display) and saved as SVG, so no network is
needed. Text stays text in the SVG
(``svg.fonttype = "none"``) and is XML-escaped by matplotlib; the viewer's own
sans-serif font draws it. Element ids are prefixed per figure so several
figures can live in one HTML page, and the hash salt is fixed so the same data
give the same SVG bytes.

The x axis is "days since CAR T infusion" (fractional, from the infusion
instant) when the record has an infusion, and the site-local date otherwise.
"""

from __future__ import annotations

import datetime as dt
import io
import re
from dataclasses import dataclass
from typing import Sequence

import matplotlib
import matplotlib.dates as mdates
import numpy as np
from matplotlib.figure import Figure

from cartwin.record.model import PatientRecord

_RC = {
    "svg.fonttype": "none",
    "svg.hashsalt": "cartwin-report",
    "font.size": 8.0,
    "axes.titlesize": 9.0,
    "axes.spines.top": False,
    "axes.spines.right": False,
}
#: Colour of each event kind marked on grade plots.
EVENT_COLOURS = {
    "tocilizumab": "tab:purple",
    "corticosteroid": "tab:orange",
    "vasopressor": "tab:red",
    "oxygen": "tab:blue",
    "icu": "black",
    "seizure": "tab:brown",
    "cerebral_edema": "tab:pink",
    "motor_weakness": "tab:olive",
    "consciousness": "tab:gray",
}
#: Events shorter than this are drawn as a line, longer ones as a band.
_SPAN_MIN = dt.timedelta(hours=6)


@dataclass(frozen=True)
class TimeAxis:
    """Maps instants to plot x values: days since infusion, or local dates.

    Attributes
    ----------
    infusion : datetime.datetime or None
        Infusion instant (UTC); ``None`` plots against site-local dates.
    offset : datetime.timedelta
        Site UTC offset used for local dates and study-day midnights.
    """

    infusion: dt.datetime | None
    offset: dt.timedelta

    @classmethod
    def of(cls, record: PatientRecord) -> TimeAxis:
        """Axis of a record (site offset as :class:`PatientRecord` defines it)."""
        return cls(record.infusion_time, site_offset(record))

    @property
    def relative(self) -> bool:
        """Whether x is in days since infusion."""
        return self.infusion is not None

    @property
    def label(self) -> str:
        """Axis label."""
        if self.relative:
            return "days since CAR T infusion"
        return f"date (site time, {format_offset(self.offset)})"

    def x(self, when: dt.datetime) -> float | dt.datetime:
        """Plot position of an instant."""
        if self.infusion is not None:
            return (when - self.infusion).total_seconds() / 86400.0
        return (when + self.offset).replace(tzinfo=None)

    def day_start(self, study_day: float) -> float | None:
        """Position of local midnight that starts ``study_day`` (needs infusion)."""
        if self.infusion is None:
            return None
        local = self.infusion + self.offset
        midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
        return study_day - (local - midnight).total_seconds() / 86400.0


def site_offset(record: PatientRecord) -> dt.timedelta:
    """Site UTC offset: the record's, else the infusion's source offset, else 0."""
    if record.site_utc_offset_min is not None:
        return dt.timedelta(minutes=record.site_utc_offset_min)
    infusion = record.infusion
    minutes = infusion.source_utc_offset_min if infusion is not None else 0
    return dt.timedelta(minutes=minutes)


def format_offset(offset: dt.timedelta) -> str:
    """``UTC+01:00`` style text of an offset."""
    minutes = int(offset.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    return f"UTC{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


@dataclass(frozen=True)
class Panel:
    """One small time-series panel.

    Attributes
    ----------
    title : str
        Panel title (quantity name).
    unit : str
        Unit of ``y``, shown on the y axis.
    x, y : sequence
        Positions (see :class:`TimeAxis`) and values.
    marks : sequence of (x, y or None, label)
        Annotated points (score inputs); ``y=None`` draws a vertical line.
    ref_line : (value, label) or None
        Horizontal reference line, e.g. the 38 degC fever threshold.
    log : bool
        Logarithmic y axis.
    ylim : (low, high) or None
        Fixed y range (e.g. 0-10 for the ICE score).
    """

    title: str
    unit: str
    x: Sequence = ()
    y: Sequence = ()
    marks: Sequence[tuple] = ()
    ref_line: tuple[float, str] | None = None
    log: bool = False
    ylim: tuple[float, float] | None = None


@dataclass(frozen=True)
class KineticsPlot:
    """Data of the CAR T kinetics plot; x in days since infusion."""

    unit: str
    t_obs: Sequence[float] = ()
    y_obs: Sequence[float] = ()
    censored: Sequence[bool] = ()
    t_grid: Sequence[float] = ()
    median: Sequence[float] = ()
    lower: Sequence[float] = ()
    upper: Sequence[float] = ()
    interval: float | None = None
    cmax: tuple[float, float] | None = None


@dataclass(frozen=True)
class GradePlot:
    """Data of a CRS or ICANS grade plot.

    ``steps`` are (x, grade) points of the timeline; ``daily`` are
    (x of the day's midnight, grade) bars one day wide; ``events`` are
    (kind, x start, x end or None, label); ``xlim`` is the shown x range
    (``None``: everything).
    """

    title: str
    steps: Sequence[tuple] = ()
    daily: Sequence[tuple] = ()
    events: Sequence[tuple] = ()
    aux: Panel | None = None
    max_grade: int = 4
    xlim: tuple | None = None


def figure_svg(fig: Figure, prefix: str) -> str:
    """SVG markup of ``fig`` for inlining in HTML.

    The XML prolog, DOCTYPE and metadata are dropped and every id (and every
    reference to one) is prefixed with ``prefix`` so ids stay unique in a page.
    """
    buffer = io.StringIO()
    with matplotlib.rc_context(_RC):
        fig.savefig(buffer, format="svg", metadata={"Date": None})
    svg = buffer.getvalue()
    svg = svg[svg.index("<svg"):]
    svg = re.sub(r"<metadata>.*?</metadata>\s*", "", svg, flags=re.S)
    svg = svg.replace('id="', f'id="{prefix}-')
    svg = svg.replace('href="#', f'href="#{prefix}-')
    svg = svg.replace("url(#", f"url(#{prefix}-")
    return svg.replace("<svg ", '<svg class="plot" role="img" ', 1)


def _new_figure(rows: int, cols: int, size: tuple[float, float], **kwargs):
    """A figure and its axes; call inside ``rc_context(_RC)``."""
    fig = Figure(figsize=size, layout="constrained")
    return fig, fig.subplots(rows, cols, **kwargs)


def _time_axis(ax, axis: TimeAxis) -> None:
    ax.set_xlabel(axis.label)
    if not axis.relative:
        locator = mdates.AutoDateLocator()
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))


def _legend(ax, **kwargs) -> None:
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(handles, labels, frameon=False, fontsize=7, **kwargs)


def plot_kinetics(data: KineticsPlot, axis_label: str) -> str | None:
    """Observed and forecast CAR T levels on a log axis; ``None`` if empty."""
    t_obs = np.asarray(data.t_obs, dtype=float)
    y_obs = np.asarray(data.y_obs, dtype=float)
    below = np.asarray(data.censored, dtype=bool).reshape(t_obs.shape)
    grid = _positive_curves(data)
    if not t_obs.size and grid is None:
        return None
    with matplotlib.rc_context(_RC):
        fig, ax = _new_figure(1, 1, (7.0, 3.4))
        if grid is not None:
            _draw_forecast(ax, grid, data.interval)
        keep = y_obs > 0
        exact, cens = keep & ~below, keep & below
        ax.plot(t_obs[exact], y_obs[exact], "o", color="black", ms=4,
                label="observed")
        ax.plot(t_obs[cens], y_obs[cens], "v", mfc="none", color="black", ms=6,
                label="below LLOQ (at LLOQ)")
        if data.cmax is not None and data.cmax[1] > 0:
            ax.plot(*data.cmax, "x", color="tab:red", ms=8, label="Cmax, Tmax (median)")
        ax.set_yscale("log")
        ax.set_ylabel(f"CAR T level ({data.unit})")
        ax.set_xlabel(axis_label)
        _legend(ax, loc="best")
    return figure_svg(fig, "kinetics")


def _positive_curves(data: KineticsPlot):
    t = np.asarray(data.t_grid, dtype=float)
    if not t.size:
        return None
    curves = [np.asarray(c, dtype=float) for c in (data.median, data.lower, data.upper)]
    if any(c.shape != t.shape for c in curves):
        raise ValueError("kinetics t_days, median, lower and upper differ in length")
    return t, *[np.where(c > 0, c, np.nan) for c in curves]


def _draw_forecast(ax, grid, interval: float | None) -> None:
    t, median, lower, upper = grid
    share = f"{interval * 100:.0f} % interval" if interval else "interval"
    if np.isfinite(lower).any() and np.isfinite(upper).any():
        ax.fill_between(t, lower, upper, color="tab:blue", alpha=0.2, lw=0,
                        label=f"forecast {share}")
    if np.isfinite(median).any():
        ax.plot(t, median, color="tab:blue", lw=1.5, label="forecast median")


def plot_panels(panels: Sequence[Panel], axis: TimeAxis, *, cols: int = 2,
                prefix: str = "labs") -> str | None:
    """Small multiples of time series with annotated marks; ``None`` if empty."""
    if not panels:
        return None
    rows = -(-len(panels) // cols)
    with matplotlib.rc_context(_RC):
        fig, axes = _new_figure(rows, cols, (7.2, 2.0 * rows + 0.4), squeeze=False)
        for ax, panel in zip(axes.flat, panels):
            _draw_panel(ax, panel, axis)
        for ax in axes.flat[len(panels):]:
            ax.set_visible(False)
    return figure_svg(fig, prefix)


def _draw_panel(ax, panel: Panel, axis: TimeAxis) -> None:
    ax.set_title(panel.title, loc="left")
    ax.set_ylabel(panel.unit)
    _time_axis(ax, axis)
    if not len(panel.x):
        ax.text(0.5, 0.5, "no data", ha="center", va="center",
                transform=ax.transAxes, color="gray")
        return
    ax.plot(panel.x, panel.y, "-o", color="tab:blue", ms=2.5, lw=1)
    if panel.log and min(panel.y) > 0:
        ax.set_yscale("log")
    if panel.ylim is not None:
        ax.set_ylim(*panel.ylim)
    if panel.ref_line is not None:
        value, text = panel.ref_line
        ax.axhline(value, color="tab:red", ls="--", lw=0.8, label=text)
        _legend(ax, loc="upper right")
    for index, (x, y, text) in enumerate(sorted(panel.marks, key=lambda m: m[0])):
        _draw_mark(ax, x, y, text, index)


def _draw_mark(ax, x, y, text: str, index: int) -> None:
    """Red diamond with its label; labels are staggered to limit overlap."""
    if y is None:
        ax.axvline(x, color="tab:red", ls=":", lw=0.9)
        ax.annotate(text, (x, 1.0), xycoords=("data", "axes fraction"),
                    fontsize=6, color="tab:red", va="top", rotation=90)
        return
    ax.plot([x], [y], "D", color="tab:red", ms=4)
    # Alternate above and below, stepping away from the point.
    step = 8 + 9 * (index // 2 % 3)
    ax.annotate(text, (x, y), xytext=(6, step if index % 2 == 0 else -step - 4),
                textcoords="offset points", fontsize=6, color="tab:red",
                arrowprops={"arrowstyle": "-", "color": "tab:red", "lw": 0.4})


def plot_grade(data: GradePlot, axis: TimeAxis, prefix: str) -> str | None:
    """Grade step plot with treatment events, over an auxiliary panel."""
    if not data.steps and not data.daily and data.aux is None:
        return None
    rows = 2 if data.aux is not None else 1
    with matplotlib.rc_context(_RC):
        fig, axes = _new_figure(rows, 1, (7.0, 2.2 * rows + 0.3), squeeze=False,
                                sharex=True)
        ax = axes[0, 0]
        _draw_grades(ax, data)
        _draw_events(ax, data.events)
        _legend(ax, loc="upper right", ncols=2)
        _time_axis(ax, axis)
        if data.aux is not None:
            ax.set_xlabel("")
            _draw_panel(axes[1, 0], data.aux, axis)
        if data.xlim is not None:
            ax.set_xlim(*data.xlim)
    return figure_svg(fig, prefix)


def _draw_grades(ax, data: GradePlot) -> None:
    if data.daily:
        xs, grades = zip(*data.daily)
        ax.bar(xs, grades, width=1.0, align="edge", color="tab:gray", alpha=0.3,
               label="daily maximum")
    if data.steps:
        xs = [x for x, _ in data.steps]
        grades = [g for _, g in data.steps]
        ax.step(xs, grades, where="post", color="black", lw=1.5, label="grade")
    ax.set_ylim(-0.2, data.max_grade + 0.6)
    ax.set_yticks(range(data.max_grade + 1))
    ax.set_ylabel("grade")
    ax.set_title(data.title, loc="left")


def _draw_events(ax, events: Sequence[tuple]) -> None:
    seen = set()
    for kind, start, end, label in events:
        colour = EVENT_COLOURS.get(kind, "tab:green")
        legend = label if label not in seen else None
        seen.add(label)
        if end is None:
            ax.axvline(start, color=colour, ls="--", lw=1.2, label=legend)
        else:
            ax.axvspan(start, end, color=colour, alpha=0.15, lw=0, label=legend)


def is_span(start: dt.datetime, end: dt.datetime | None) -> bool:
    """Whether an event lasts long enough to draw as a band."""
    return end is not None and end - start >= _SPAN_MIN


def plot_journey(phases: Sequence[tuple], axis: TimeAxis) -> str | None:
    """Gantt bars of the journey phases: (phase, x start, x end or None)."""
    rows = [(name, start, end) for name, start, end in phases if start is not None]
    if not rows:
        return None
    with matplotlib.rc_context(_RC):
        fig, ax = _new_figure(1, 1, (7.0, 0.35 * len(rows) + 0.9))
        for index, (name, start, end) in enumerate(rows):
            if end is not None:
                ax.plot([start, end], [index, index], "-", color="tab:blue", lw=6,
                        solid_capstyle="butt")
            if end is None or _shorter_than_half_day(start, end):
                ax.plot([start], [index], "D", color="tab:blue", ms=5)
        ax.set_yticks(range(len(rows)), [name for name, _, _ in rows])
        ax.set_ylim(len(rows) - 0.5, -0.5)
        if axis.relative:
            ax.axvline(0.0, color="tab:red", lw=0.8, ls="--")
        _time_axis(ax, axis)
    return figure_svg(fig, "journey")


def _shorter_than_half_day(start, end) -> bool:
    span = end - start
    if isinstance(span, dt.timedelta):
        return span < dt.timedelta(hours=12)
    return span < 0.5
