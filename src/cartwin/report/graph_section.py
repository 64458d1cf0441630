"""The "Multi-scale model" section of the report, from ``outputs["graph"]``.

Reads only the JSON written by :mod:`cartwin.twin.graph_outputs`: forecast
bands of every observable (the plot shows IL-6, ANC with the 0.5 and
1.0 ×10⁹/L lines, and the tumour marker), the CRS grade probabilities, the
neutropenia outlook beside CAR-HEMATOTOX (Rejeski 2021,
doi:10.1182/blood.2020010543), response probabilities, the scenarios side by
side (a table and one overlay plot) and the identifiability of each
parameter, and, when the forecast used the product's T-cell fates
(:mod:`cartwin.graph.fates_link`), why its kinetics differ from the
population's: the lines of ``outputs["graph"]["fate_link"]["explain"]``.
Units go through :func:`cartwin.report.html.fmt_unit`; times are
days since CAR T infusion (the graph's own time). Deterministic: the same
outputs give the same markup.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from markupsafe import Markup
from matplotlib.figure import Figure

from cartwin.report import plots

#: Observables plotted with bands, in order, with titles. The first tumour
#: marker the graph has is used (SPD for LBCL, M-protein for MM, else LDH).
PLOTTED = (("il6", "IL-6"), ("anc", "ANC (neutrophils)"))
TUMOUR_MARKERS = (("spd", "Tumour SPD"), ("m_protein", "M-protein"), ("ldh", "LDH"))
#: ANC reference lines (×10⁹/L): severe neutropenia and recovery threshold
#: (Rejeski 2021, doi:10.1182/blood.2020010543).
ANC_LINES = (0.5, 1.0)
LOG_SERIES = frozenset({"il6", "anc", "cart_flow", "cart_qpcr", "crp", "m_protein"})
NOT_RUN = "The multi-scale model was not run for this version; use --graph."
VERDICT_TEXT = {
    "informed": "informed by the data",
    "weakly informed": "weakly informed",
    "prior": "population value (not learned from the data)",
}


def graph_section(outputs: dict, fmt_number, fmt_unit) -> dict[str, Any]:
    """Template data of the section; ``shown`` False when the graph was not run.

    A version built without ``--graph`` gets no section (the report's section
    list is unchanged); a graph that failed gets the section with its reason.

    Parameters
    ----------
    outputs : dict
        ``TwinVersion.outputs``.
    fmt_number, fmt_unit : callable
        The report's number and unit formatters.
    """
    graph = outputs.get("graph")
    if not isinstance(graph, dict):
        return {"available": False, "reason": NOT_RUN, "shown": False}
    status = graph.get("status", "unavailable")
    if "series" not in graph:
        reason = graph.get("reason") or "no forecast"
        return {"available": False, "reason": f"Model graph {status}: {reason}",
                "shown": True}
    fmt = _Formats(fmt_number, fmt_unit)
    return {
        "available": True,
        "shown": True,
        "reason": "",
        "status": f"{status}: {graph.get('reason', '')}",
        "meta": _meta(graph, fmt),
        "plot": Markup(_band_plot(graph, fmt)),
        "crs": _crs_rows(graph),
        "neutropenia": _neutropenia_rows(graph.get("neutropenia"), fmt),
        "hematotox": ((graph.get("neutropenia") or {}).get("hematotox") or {}),
        "response": _response_rows(graph.get("response") or []),
        "scenarios": _scenario_table(graph, fmt),
        "overlay": _overlay_plot(graph, fmt),
        "identifiability": _identifiability_rows(graph.get("identifiability") or {}, fmt),
        "fate_link": _fate_lines(graph.get("fate_link")),
    }


def _fate_lines(link: dict | None) -> list[str]:
    """The stored explanation of a fate link (empty: no link was used)."""
    if not isinstance(link, dict):
        return []
    return [str(line) for line in link.get("explain") or []]


class _Formats:
    def __init__(self, number, unit):
        self.number, self.unit = number, unit

    def interval(self, entry: dict | None, unit: str = "") -> str:
        if not entry or entry.get("median") is None:
            return "–"
        low = "> day 60" if entry.get("lower") is None else self.number(entry["lower"])
        high = "> day 60" if entry.get("upper") is None else self.number(entry["upper"])
        text = f"{self.number(entry['median'])} ({low} – {high})"
        return f"{text} {self.unit(unit)}".strip()


def _meta(graph: dict, fmt: _Formats) -> str:
    name = (graph.get("graph") or {}).get("name", "")
    return (
        f"Graph {name}; {graph.get('n_draws')} {graph.get('basis')} draws "
        f"({graph.get('n_failed')} failed); bands: median and "
        f"{fmt.number(100 * graph.get('interval', 0.9))} % interval."
    )


def _tumour_marker(series: dict) -> tuple[str, str] | None:
    return next(((q, t) for q, t in TUMOUR_MARKERS if q in series), None)


def _panels(graph: dict) -> list[tuple[str, str]]:
    series = graph["series"]
    chosen = [(q, t) for q, t in PLOTTED if q in series]
    marker = _tumour_marker(series)
    return chosen + ([marker] if marker else [])


def _array(values) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def _band_plot(graph: dict, fmt: _Formats) -> str:
    panels = _panels(graph)
    t = _array(graph["t_days"])
    fig = Figure(figsize=(7.0, 2.3 * len(panels)), layout="constrained")
    axes = np.atleast_1d(fig.subplots(len(panels), 1, sharex=True))
    for ax, (quantity, title) in zip(axes, panels):
        band = graph["series"][quantity]
        ax.fill_between(t, _array(band["lower"]), _array(band["upper"]),
                        color="tab:blue", alpha=0.25, linewidth=0, label="interval")
        ax.plot(t, _array(band["median"]), color="tab:blue", label="median")
        if quantity == "anc":
            for level in ANC_LINES:
                ax.axhline(level, color="grey", linestyle=":", linewidth=0.8)
        if quantity in LOG_SERIES:
            ax.set_yscale("log")
        ax.set_title(f"{title} ({fmt.unit(band['unit'])})")
    axes[-1].set_xlabel("days since CAR T infusion")
    axes[0].legend(frameon=False, fontsize=7)
    alt = ("Model forecast, median and interval, of "
           + ", ".join(t for _, t in panels) + " against days since infusion.")
    return plots.figure_svg(fig, "graph-bands", alt=alt)


def _crs_rows(graph: dict) -> list[dict[str, str]]:
    rows = []
    for window in graph.get("crs_windows") or []:
        probs = window.get("grade_probabilities") or {}
        rows.append({
            "window": f"{window['hours']} h from day {window['start_day']:.1f}",
            "grades": [_percent(probs.get(str(g))) for g in range(5)],
            "ge2": _percent(window.get("p_grade_ge_2")),
        })
    return rows


def _percent(value: Any) -> str:
    if value is None:
        return "–"
    return "< 0.1 %" if value < 0.001 else f"{100 * value:.1f} %"


def _neutropenia_rows(outlook: dict | None, fmt: _Formats) -> list[tuple[str, str]]:
    if not outlook:
        return []
    return [
        ("Days with ANC < 0.5 ×10⁹/L, days 0–30", fmt.interval(outlook["severe_days_to_30"], "d")),
        ("Days with ANC < 0.5 ×10⁹/L, days 0–60", fmt.interval(outlook["severe_days_to_60"], "d")),
        ("Day ANC stays > 0.5 ×10⁹/L", fmt.interval(outlook["recovery_0_5_day"])),
        ("Day ANC stays > 1.0 ×10⁹/L", fmt.interval(outlook["recovery_1_0_day"])),
        ("Nadir ANC", fmt.interval(outlook["nadir_anc"], "10*9/L")),
    ]


def _response_rows(response: list) -> list[dict[str, Any]]:
    return [
        {"day": f"day {entry['day']:.0f}", "criteria": entry.get("criteria", ""),
         "probabilities": [(k, _percent(v)) for k, v in entry["probabilities"].items()]}
        for entry in response
    ]


def _scenario_table(graph: dict, fmt: _Formats) -> dict[str, Any]:
    scenarios = graph.get("scenarios") or []
    rows = []
    first = scenarios[0]["endpoints"] if scenarios else {}
    for quantity, entry in first.items():
        for key, label in (("peak", "peak"), ("day_28", "day 28"), ("day_90", "day 90")):
            if key in entry:
                rows.append({"label": f"{quantity} {label} ({fmt.unit(entry['unit'])})",
                             "cells": [fmt.interval(s["endpoints"][quantity].get(key))
                                       for s in scenarios]})
    rows.append({"label": "P(CRS grade ≥ 2), first 72 h",
                 "cells": [_percent((s.get("crs_72h") or {}).get("p_grade_ge_2"))
                           for s in scenarios]})
    rows.append({"label": "Days ANC < 0.5 ×10⁹/L, days 0–30",
                 "cells": [fmt.interval((s.get("neutropenia") or {}).get("severe_days_to_30"))
                           for s in scenarios]})
    rows.append({"label": "P(CR) at day 28",
                 "cells": [_percent(((s.get("response") or {}).get("probabilities") or {}).get("CR"))
                           for s in scenarios]})
    return {"names": [s["name"] for s in scenarios],
            "descriptions": [(s["name"], s["description"]) for s in scenarios],
            "rows": rows}


def _overlay_plot(graph: dict, fmt: _Formats) -> Any:
    scenarios = graph.get("scenarios") or []
    if not scenarios or not graph.get("scenario_t_days"):
        return None
    t = _array(graph["scenario_t_days"])
    panels = [(q, title) for q, title in _panels(graph) if q in scenarios[0]["medians"]]
    fig = Figure(figsize=(7.0, 2.3 * len(panels)), layout="constrained")
    axes = np.atleast_1d(fig.subplots(len(panels), 1, sharex=True))
    for ax, (quantity, title) in zip(axes, panels):
        for k, scenario in enumerate(scenarios):
            ax.plot(t, _array(scenario["medians"][quantity]), color=f"C{k}",
                    linestyle="-" if k == 0 else "--", label=scenario["name"])
        if quantity in LOG_SERIES:
            ax.set_yscale("log")
        ax.set_title(f"{title}, median ({fmt.unit(graph['series'][quantity]['unit'])})")
    axes[-1].set_xlabel("days since CAR T infusion")
    axes[0].legend(frameon=False, fontsize=7)
    alt = ("Median forecasts under each scenario ("
           + ", ".join(s["name"] for s in scenarios) + ") of "
           + ", ".join(t for _, t in panels) + ".")
    return Markup(plots.figure_svg(fig, "graph-scenarios", alt=alt))


def _identifiability_rows(table: dict, fmt: _Formats) -> list[dict[str, str]]:
    return [
        {"name": name, "map": f"{fmt.number(entry.get('map'))} {fmt.unit(entry.get('unit'))}".strip(),
         "interval": f"{fmt.number(entry.get('lower'))} – {fmt.number(entry.get('upper'))}",
         "prior": fmt.number(entry.get("prior_median")),
         "ratio": fmt.number(entry.get("sd_ratio")),
         "verdict": VERDICT_TEXT.get(entry.get("verdict"), str(entry.get("verdict")))}
        for name, entry in table.items()
    ]
