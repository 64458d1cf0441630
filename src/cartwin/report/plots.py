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
Every figure carries ``role="img"`` and a text alternative (``aria-label`` and
``<title>``) given by the caller.
"""

from __future__ import annotations

import datetime as dt
import html
import io
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib
import matplotlib.dates as mdates
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MultipleLocator

from cartwin.record.model import PatientRecord

#: Matplotlib settings of every report figure (text kept as text in the SVG,
#: fixed hash salt so the same data give the same bytes); shared with the
#: trial report (cartwin.trial._report_figures).
RC = {
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
    """Site UTC offset in which the report shows every instant.

    The record's ``site_utc_offset_min``, else the infusion's source offset
    (both as :meth:`PatientRecord.study_day` uses them), else, for a record
    without infusion, the source offset most of its events and observations
    carry (the earliest on a tie), else UTC.
    """
    if record.site_utc_offset_min is not None:
        return dt.timedelta(minutes=record.site_utc_offset_min)
    if record.infusion is not None:
        return dt.timedelta(minutes=record.infusion.source_utc_offset_min)
    offsets = Counter(item.source_utc_offset_min
                      for item in (*record.events, *record.observations))
    minutes = offsets.most_common(1)[0][0] if offsets else 0
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
        Human-readable unit of ``y``, shown on the y axis.
    x, y : sequence
        Positions (see :class:`TimeAxis`) and values.
    marks : sequence of (x, y or None)
        Values a score used, drawn as red diamonds; ``y=None`` (a value whose
        unit could not be converted) draws a dotted vertical line. Their labels
        belong in a caption outside the plot.
    ref_lines : sequence of (value, label)
        Horizontal reference lines, e.g. the 38 °C fever threshold.
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
    ref_lines: Sequence[tuple[float, str]] = ()
    log: bool = False
    ylim: tuple[float, float] | None = None


@dataclass(frozen=True)
class Marker:
    """A treatment marked on every panel of a figure: a line or a band.

    ``start`` and ``end`` are positions (see :class:`TimeAxis`); ``end=None``
    draws a vertical line at ``start``.
    """

    label: str
    start: float | dt.datetime
    end: float | dt.datetime | None = None
    colour: str = "black"


@dataclass(frozen=True)
class AssaySeries:
    """Measurements of one CAR T assay; ``t`` in days since infusion.

    ``label`` is the y-axis label with its unit (``"CAR T cells (cells/µL)"``),
    ``legend`` the legend entry of the measured points, ``title`` an optional
    panel title; ``censored`` flags values below the lower limit of
    quantification, drawn at that limit.
    """

    label: str
    t: Sequence[float] = ()
    y: Sequence[float] = ()
    censored: Sequence[bool] = ()
    title: str = ""
    legend: str = "measured"


@dataclass(frozen=True)
class KineticsPlot:
    """Data of the CAR T kinetics figure; x in days since infusion.

    ``observed`` is the assay the model was fitted to, ``other`` the other
    assay (shown in its own panel, not fitted). The forecast curves are on
    ``t_grid``; ``cmax`` is the (Tmax, Cmax) median point.
    """

    observed: AssaySeries
    t_grid: Sequence[float] = ()
    median: Sequence[float] = ()
    lower: Sequence[float] = ()
    upper: Sequence[float] = ()
    interval: float | None = None
    cmax: tuple[float, float] | None = None
    other: AssaySeries | None = None


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


def figure_svg(fig: Figure, prefix: str, alt: str = "") -> str:
    """SVG markup of ``fig`` for inlining in HTML.

    The XML prolog, DOCTYPE and metadata are dropped and every id (and every
    reference to one) is prefixed with ``prefix`` so ids stay unique in a page.
    The root gets ``role="img"`` and, when ``alt`` is given, an ``aria-label``
    and a ``<title>`` child holding ``alt`` (escaped) as its text alternative.
    """
    buffer = io.StringIO()
    with matplotlib.rc_context(RC):
        fig.savefig(buffer, format="svg", metadata={"Date": None})
    svg = buffer.getvalue()
    svg = svg[svg.index("<svg"):]
    svg = re.sub(r"<metadata>.*?</metadata>\s*", "", svg, flags=re.DOTALL)
    svg = svg.replace('id="', f'id="{prefix}-')
    svg = svg.replace('href="#', f'href="#{prefix}-')
    svg = svg.replace("url(#", f"url(#{prefix}-")
    if not alt:
        return svg.replace("<svg ", '<svg class="plot" role="img" ', 1)
    text = html.escape(alt, quote=True)
    svg = svg.replace("<svg ", f'<svg class="plot" role="img" aria-label="{text}" ', 1)
    head_end = svg.index(">") + 1
    return f"{svg[:head_end]}\n <title>{text}</title>{svg[head_end:]}"


def _new_figure(rows: int, cols: int, size: tuple[float, float], **kwargs):
    """A figure and its axes; call inside ``rc_context(RC)``."""
    fig = Figure(figsize=size, layout="constrained")
    return fig, fig.subplots(rows, cols, **kwargs)


def _time_axis(ax, axis: TimeAxis) -> None:
    ax.set_xlabel(axis.label)
    if not axis.relative:
        locator = mdates.AutoDateLocator()
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))


def legend(ax, **kwargs) -> None:
    """A frameless legend on ``ax`` when it has labelled artists.

    ``kwargs`` go to :meth:`matplotlib.axes.Axes.legend` (``loc``, ``ncols``).
    """
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(handles, labels, frameon=False, fontsize=7, **kwargs)


def figure_legend(fig, axes, ncols: int = 2) -> None:
    """One legend above all panels, each label once."""
    entries: dict[str, object] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    if entries:
        fig.legend(list(entries.values()), list(entries), loc="outside upper center",
                   ncols=ncols, frameon=False, fontsize=7)


# -- CAR T kinetics --------------------------------------------------------------
#: Main kinetics panel: from day -1 to 30 days after the last observation,
#: but at least to day 42 (6 weeks, past the usual expansion and contraction).
KINETICS_START_DAY = -1.0
KINETICS_DAYS_AFTER_LAST = 30.0
KINETICS_MIN_END_DAY = 42.0
#: Pre-infusion samples earlier than this appear only on the whole-horizon panel.
KINETICS_EARLIEST_DAY = -7.0


def kinetics_window(t_days: Sequence[float]) -> tuple[float, float]:
    """x range (days since infusion) of the main CAR T kinetics panel.

    Parameters
    ----------
    t_days : sequence of float
        Times of all CAR T observations, days since infusion.

    Returns
    -------
    (float, float)
        From day -1 (or half a day before an earlier pre-infusion sample, not
        before day -7) to ``max(last observation at t >= 0 + 30, 42)``.
    """
    t = np.asarray(t_days, dtype=float)
    t = t[np.isfinite(t)]
    start = KINETICS_START_DAY
    if t.size and t.min() - 0.5 < start:
        start = max(float(t.min()) - 0.5, KINETICS_EARLIEST_DAY)
    after = t[t >= 0]
    end = KINETICS_MIN_END_DAY
    if after.size:
        end = max(end, float(after.max()) + KINETICS_DAYS_AFTER_LAST)
    return start, end


def _series_arrays(series: AssaySeries | None):
    """(t, y, censored) arrays of a series; values <= 0 dropped (log axis)."""
    if series is None:
        return np.zeros(0), np.zeros(0), np.zeros(0, dtype=bool)
    t = np.asarray(series.t, dtype=float)
    y = np.asarray(series.y, dtype=float)
    below = np.asarray(series.censored, dtype=bool)
    below = below.reshape(t.shape) if below.size else np.zeros(t.shape, dtype=bool)
    keep = np.isfinite(t) & (y > 0)
    return t[keep], y[keep], below[keep]


def plot_kinetics(data: KineticsPlot, *, alt: str = "") -> str | None:
    """CAR T levels and forecast, zoomed on the clinically relevant days.

    The main panel spans :func:`kinetics_window`; a vertical line marks the
    last observation, after which only the forecast remains. Samples taken
    before the infusion (which the fit ignores) are drawn as grey squares.
    The other assay, when measured, gets its own panel (not fitted); a
    smaller last panel shows the whole forecast horizon. ``None`` if empty.
    """
    observed, other = _series_arrays(data.observed), _series_arrays(data.other)
    grid = _positive_curves(data)
    times = np.concatenate([observed[0], other[0]])
    if not times.size and grid is None:
        return None
    window = kinetics_window(times)
    last = observed[0][observed[0] >= 0].max() if (observed[0] >= 0).any() else None
    far = max([window[1], *times, *(grid[0] if grid is not None else ())])
    whole = far > window[1] or bool(times.size and times.min() < window[0])
    heights = [3.0] + [1.6] * int(other[0].size > 0) + [1.6] * int(whole)
    with matplotlib.rc_context(RC):
        fig, axes = _new_figure(len(heights), 1, (7.2, sum(heights) + 0.6),
                                squeeze=False, gridspec_kw={"height_ratios": heights})
        axes = axes[:, 0]
        _draw_kinetics_main(axes[0], data, observed, grid, window, last)
        if other[0].size:
            _draw_other_assay(axes[1], data.other, other, window)
        if whole:
            _draw_full_horizon(axes[-1], observed, grid, window, last, far)
        figure_legend(fig, axes, ncols=3)
    return figure_svg(fig, "kinetics", alt)


def _draw_kinetics_main(ax, data: KineticsPlot, observed, grid, window, last) -> None:
    if grid is not None:
        _draw_forecast(ax, _clip_grid(grid, window[1]), data.interval)
    ax.axvline(0.0, color="black", ls="--", lw=0.8, label="CAR T infusion (day 0)")
    _draw_observations(ax, *observed, label=data.observed.legend)
    if data.cmax is not None and data.cmax[1] > 0:
        ax.plot(*data.cmax, "x", color="tab:red", ms=8, label="Cmax, Tmax (median)")
    if last is not None:
        ax.axvline(last, color="0.3", ls=":", lw=1.2,
                   label=f"last observation (day {last:.0f}); forecast only after")
    ax.set_title(data.observed.title, loc="left")
    _kinetics_axes(ax, data.observed.label, window)


def _draw_other_assay(ax, series: AssaySeries, arrays, window) -> None:
    ax.axvline(0.0, color="black", ls="--", lw=0.8)
    _draw_observations(ax, *arrays, label=series.legend, colour="tab:green")
    ax.set_title(series.title, loc="left")
    _kinetics_axes(ax, series.label.replace(" (", "\n("), window)


def _draw_full_horizon(ax, observed, grid, window, last, far) -> None:
    if grid is not None:
        _draw_forecast(ax, grid, None, legend=False)
    t, y, _ = observed
    ax.plot(t, y, ".", color="black", ms=3)
    ax.axvspan(*window, color="0.5", alpha=0.12, lw=0,
               label="days shown in the upper panel")
    if last is not None:
        ax.axvline(last, color="0.3", ls=":", lw=1.2)
    ax.set_title(f"Whole forecast horizon, to day {far:.0f}", loc="left")
    ax.set_yscale("log")
    ax.set_xlim(min(window[0], *t) if t.size else window[0], far)
    ax.set_xlabel("days since CAR T infusion")


def _kinetics_axes(ax, ylabel: str, window) -> None:
    ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    ax.set_xlim(*window)
    ax.set_xlabel("days since CAR T infusion")
    span = window[1] - window[0]
    if span <= 140:  # weekly (or fortnightly) ticks read as clinic visits
        ax.xaxis.set_major_locator(MultipleLocator(7 if span <= 70 else 14))


def _draw_observations(ax, t, y, below, *, label: str, colour: str = "black") -> None:
    """Measured, below-LLOQ and pre-infusion points; empty groups get no entry."""
    before = t < 0
    groups = (
        (~before & ~below, {"marker": "o", "ms": 4}, label),
        (~before & below, {"marker": "v", "ms": 6, "mfc": "none"},
         "below LLOQ (drawn at the limit)"),
        (before, {"marker": "s", "ms": 5, "mfc": "0.8", "color": "0.3", "zorder": 4},
         "before infusion (not used by the fit)"),
    )
    for keep, style, text in groups:
        if keep.any():
            style = {"color": colour, **style}
            ax.plot(t[keep], y[keep], ls="none", label=text, **style)


def _positive_curves(data: KineticsPlot):
    t = np.asarray(data.t_grid, dtype=float)
    if not t.size:
        return None
    curves = [np.asarray(c, dtype=float) for c in (data.median, data.lower, data.upper)]
    if any(c.shape != t.shape for c in curves):
        raise ValueError("kinetics t_days, median, lower and upper differ in length")
    return t, *[np.where(c > 0, c, np.nan) for c in curves]


def _clip_grid(grid, end: float):
    """Forecast points up to ``end`` and the first one after it."""
    t = grid[0]
    count = int(np.searchsorted(t, end, side="right")) + 1
    return tuple(column[:count] for column in grid)


def _draw_forecast(ax, grid, interval: float | None, *, legend: bool = True) -> None:
    t, median, lower, upper = grid
    share = f"{interval * 100:.0f} % interval" if interval else "interval"
    if np.isfinite(lower).any() and np.isfinite(upper).any():
        ax.fill_between(t, lower, upper, color="tab:blue", alpha=0.2, lw=0,
                        label=f"forecast {share}" if legend else None)
    if np.isfinite(median).any():
        ax.plot(t, median, color="tab:blue", lw=1.5,
                label="forecast median" if legend else None)


# -- small multiples -------------------------------------------------------------
#: Colour and line style of the 1st, 2nd, ... reference line of a panel.
_REF_STYLES = (("tab:red", "--"), ("tab:orange", ":"), ("tab:brown", "-."))


def plot_panels(panels: Sequence[Panel], axis: TimeAxis, *, cols: int = 2,
                prefix: str = "labs", markers: Sequence[Marker] = (),
                alt: str = "") -> str | None:
    """Small multiples on one shared x range; ``None`` if there is no panel.

    Every panel gets the ``markers`` (infusion, lymphodepletion); one legend
    above the panels explains markers, reference lines and score marks.
    """
    if not panels:
        return None
    rows = -(-len(panels) // cols)
    xlim = shared_xlim(panels)
    with matplotlib.rc_context(RC):
        fig, axes = _new_figure(rows, cols, (7.2, 2.0 * rows + 0.8), squeeze=False)
        for ax, panel in zip(axes.flat, panels):
            _draw_panel(ax, panel, axis)
            _draw_markers(ax, markers)
            if xlim is not None:
                ax.set_xlim(*xlim)
        for ax in axes.flat[len(panels):]:
            ax.set_visible(False)
        figure_legend(fig, axes.flat[:len(panels)], ncols=3)
    return figure_svg(fig, prefix, alt)


def shared_xlim(panels: Sequence[Panel]) -> tuple | None:
    """Range of all panels' x values with a 3 % margin (dates or days)."""
    values = [x for panel in panels for x in panel.x]
    if not values:
        return None
    low, high = min(values), max(values)
    pad = (high - low) * 0.03
    if not pad:
        pad = dt.timedelta(hours=12) if isinstance(low, dt.datetime) else 0.5
    return low - pad, high + pad


def _draw_markers(ax, markers: Sequence[Marker]) -> None:
    for marker in markers:
        if marker.end is None:
            ax.axvline(marker.start, color=marker.colour, ls="--", lw=0.8,
                       label=marker.label)
        else:
            ax.axvspan(marker.start, marker.end, color=marker.colour, alpha=0.3,
                       lw=0, label=marker.label)


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
    for (value, text), (colour, style) in zip(panel.ref_lines, _REF_STYLES):
        ax.axhline(value, color=colour, ls=style, lw=0.9, label=text)
    for x, y in panel.marks:
        _draw_mark(ax, x, y)


def _draw_mark(ax, x, y) -> None:
    """Red diamond at a value a score used (a dotted line when y is unknown)."""
    label = "value used by a score (listed below)"
    if y is None:
        ax.axvline(x, color="tab:red", ls=":", lw=0.9, label=label)
    else:
        ax.plot([x], [y], "D", color="tab:red", ms=4, ls="none", label=label)


# -- grades and journey ----------------------------------------------------------
def plot_grade(data: GradePlot, axis: TimeAxis, prefix: str, *,
               alt: str = "") -> str | None:
    """Grade step plot with treatment events, over an auxiliary panel."""
    if not data.steps and not data.daily and data.aux is None:
        return None
    rows = 2 if data.aux is not None else 1
    with matplotlib.rc_context(RC):
        fig, axes = _new_figure(rows, 1, (7.0, 2.2 * rows + 0.3), squeeze=False,
                                sharex=True)
        ax = axes[0, 0]
        _draw_grades(ax, data)
        _draw_events(ax, data.events)
        legend(ax, loc="upper right", ncols=2)
        _time_axis(ax, axis)
        if data.aux is not None:
            ax.set_xlabel("")
            _draw_panel(axes[1, 0], data.aux, axis)
            legend(axes[1, 0], loc="upper right")
        if data.xlim is not None:
            ax.set_xlim(*data.xlim)
    return figure_svg(fig, prefix, alt)


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


def plot_journey(phases: Sequence[tuple], axis: TimeAxis, *,
                 alt: str = "") -> str | None:
    """Gantt bars of the journey phases: (phase, x start, x end or None)."""
    rows = [(name, start, end) for name, start, end in phases if start is not None]
    if not rows:
        return None
    with matplotlib.rc_context(RC):
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
    return figure_svg(fig, "journey", alt)


def _shorter_than_half_day(start, end) -> bool:
    span = end - start
    if isinstance(span, dt.timedelta):
        return span < dt.timedelta(hours=12)
    return span < 0.5
