"""Standalone HTML report of one twin version.

:func:`render_report` turns a :class:`~cartwin.record.model.PatientRecord` and a
:class:`~cartwin.twin.version.TwinVersion` into one HTML document that opens
without network access: CSS is inline, plots are inline SVG with a text
alternative, no script, font or image is loaded from anywhere. All text goes
through Jinja2 autoescaping.

The report reads **only** ``version.outputs`` (keys in
:data:`cartwin.twin.version.OUTPUT_KEYS`) and the version's provenance fields,
plus the record for raw observations and events. No direct identifier is
shown: the patient appears by pseudonym only. Any output key may be missing or
malformed; its section then says "not available" and why, and the rest of the
report is still rendered (the failure is logged as a warning).

Every instant is shown in the site's time zone (see
:func:`cartwin.report.plots.site_offset`) as ``YYYY-MM-DD HH:MM``, also inside
texts such as grading reasons; the version's creation time is shown in UTC.
Units are shown as clinicians write them (:data:`HUMAN_UNITS`), never as UCUM
codes.

The same record and version give the same HTML bytes: nothing in the report
depends on the clock.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from cartwin.errors import CartwinError
from cartwin.record.model import Event, PatientRecord
from cartwin.record.units import canonical_unit, to_canonical
from cartwin.report import plots
from cartwin.report.plots import (
    AssaySeries,
    GradePlot,
    KineticsPlot,
    Marker,
    Panel,
    TimeAxis,
)
from cartwin.twin.version import TwinVersion

logger = logging.getLogger(__name__)

#: Lab quantities drawn as small multiples, with their titles.
LAB_PANELS = (
    ("crp", "CRP"),
    ("ferritin", "Ferritin"),
    ("ldh", "LDH"),
    ("il6", "IL-6"),
    ("platelets", "Platelets"),
    ("anc", "ANC (neutrophils)"),
    ("hemoglobin", "Haemoglobin"),
    ("creatinine", "Creatinine"),
)
#: Labs spanning orders of magnitude, drawn on a log axis.
LOG_LABS = frozenset({"crp", "ferritin", "il6"})
#: Horizontal reference lines of lab panels, in canonical units (×10⁹/L).
#: ANC < 0.5 ×10⁹/L (500/µL) is severe neutropenia and ANC <= 1.0 ×10⁹/L the
#: recovery threshold of Rejeski 2021 (doi:10.1182/blood.2020010543);
#: platelets < 50 ×10⁹/L is severe thrombocytopenia (same paper, and the
#: proposed T-ICAHT grading; clinical-facts.md §1.3 and §4.4).
LAB_THRESHOLDS = {
    "anc": ((0.5, "ANC 0.5 ×10⁹/L: severe neutropenia"),
            (1.0, "ANC 1.0 ×10⁹/L: recovery threshold")),
    "platelets": ((50.0, "platelets 50 ×10⁹/L: severe thrombocytopenia"),),
}
#: Plain names of quantities used as score inputs.
QUANTITY_NAMES = {
    **{quantity: title for quantity, title in LAB_PANELS},
    "anc": "ANC", "alc": "ALC", "wbc": "WBC", "temperature": "Temperature",
}
#: Event kinds marked on each grade plot.
GRADE_EVENTS = {
    "crs": ("tocilizumab", "corticosteroid", "oxygen", "vasopressor", "icu"),
    "icans": ("corticosteroid", "seizure", "cerebral_edema", "motor_weakness",
              "consciousness", "icu"),
}
DERIVED_LABELS = {
    "cmax": "Peak level (Cmax)",
    "tmax": "Time to peak (Tmax)",
    "auc0_28": "Exposure, days 0–28 (AUC0–28)",
}
#: Plain name and meaning of each kinetics parameter (Stein 2019,
#: doi:10.1002/psp4.12388; glossary in :mod:`cartwin.models.kinetics`).
PARAMETER_GLOSSARY = {
    "fold_x": ("Fold expansion",
               "how many times the level rises from the infusion to the peak"),
    "tmax": ("Time to peak", "days from infusion to the peak level"),
    "cmax": ("Peak level", "highest CAR T level"),
    "alpha": ("Early decline rate",
              "how fast the level falls after the peak (short-lived effector cells)"),
    "fb": ("Fraction to the slow phase",
           "share of the peak that enters the slow (memory-like) phase"),
    "beta": ("Late decline rate", "how fast the slow (memory-like) phase declines"),
}
#: Rate parameters shown with their half-life ln 2 / rate.
_RATES = frozenset({"alpha", "beta"})
#: How each CAR T assay is named: y-axis label, method in a sentence.
ASSAYS = {
    "cart_flow": ("CAR T cells", "flow-cytometry"),
    "cart_qpcr": ("CAR transgene", "qPCR"),
}
#: Plain text of each kinetics fit status (``cartwin.inference.calibration``).
FIT_STATUS_TEXT = {
    "converged": "converged",
    "not_converged": "did not converge (see the fit diagnostics)",
    "indefinite_hessian": "no unique best fit was found (see the fit diagnostics)",
}
FEVER_CELSIUS = 38.0
NO_INFUSION = "not applicable (no infusion)"
_SECTION_ERRORS = (
    KeyError, TypeError, ValueError, IndexError, AttributeError, CartwinError,
)


def render_report(record: PatientRecord, version: TwinVersion) -> str:
    """Render the standalone HTML report of one twin version.

    Parameters
    ----------
    record : PatientRecord
        The patient's data (observations and events are plotted from it).
    version : TwinVersion
        The twin version; only ``outputs`` and provenance fields are read.

    Returns
    -------
    str
        A complete HTML5 document with inline CSS and inline SVG plots.
    """
    return _template().render(**build_context(record, version))


def write_report(record: PatientRecord, version: TwinVersion, path: str | Path) -> Path:
    """Render the report and write it to ``path`` (UTF-8); return the path."""
    path = Path(path)
    path.write_text(render_report(record, version), encoding="utf-8")
    return path


def build_context(record: PatientRecord, version: TwinVersion) -> dict[str, Any]:
    """Template context: one dict per section, each with ``available``/``reason``."""
    outputs = version.outputs if isinstance(version.outputs, dict) else {}
    axis = TimeAxis.of(record)
    return {
        "header": _header(record, version, axis),
        "facts": _section(_facts, record, axis),
        "journey": _section(_journey, outputs, axis),
        "kinetics": _section(_kinetics, record, outputs),
        "scores": _section(_scores, outputs, axis),
        "labs": _section(_labs, record, outputs, axis),
        "crs": _section(_grading, record, outputs, axis, "crs"),
        "icans": _section(_grading, record, outputs, axis, "icans"),
        "graph": _graph(outputs),
        "provenance": _section(_provenance, version),
    }


def _graph(outputs: dict) -> dict[str, Any]:
    """The multi-scale model section (:mod:`cartwin.report.graph_section`)."""
    from cartwin.report.graph_section import graph_section

    try:
        return graph_section(outputs, fmt_number, fmt_unit)
    except _SECTION_ERRORS as exc:
        logger.warning("report section graph not rendered: %r", exc)
        reason = f"could not be shown ({type(exc).__name__}: {exc})"
        return {"shown": True, **_unavailable(reason)}


@functools.cache
def report_template(name: str) -> jinja2.Template:
    """A template of ``cartwin/report/templates`` (autoescaped, strict)."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("cartwin.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env.get_template(name)


def _template() -> jinja2.Template:
    return report_template("report.html")


def _section(builder: Callable[..., dict], *args: Any) -> dict[str, Any]:
    """Run a section builder; a malformed input makes the section unavailable."""
    try:
        data = builder(*args)
    except _Unavailable as exc:
        return _unavailable(str(exc))
    except _SECTION_ERRORS as exc:
        logger.warning("report section %s not rendered: %r", builder.__name__, exc)
        return _unavailable(f"could not be shown ({type(exc).__name__}: {exc})")
    return {"available": True, "reason": "", **data}


def _unavailable(reason: str) -> dict[str, Any]:
    return {"available": False, "reason": reason}


class _Unavailable(ValueError):
    """Raised by a section builder whose input is absent; the text is the reason."""


def _require(outputs: dict, key: str) -> Any:
    if key not in outputs or outputs[key] is None:
        raise _Unavailable(f"the twin version has no {key!r} output")
    return outputs[key]


# -- formatting ----------------------------------------------------------------
def fmt_number(value: Any) -> str:
    """Number as a clinician reads it: 3 significant digits, thousands grouped."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "–" if value is None else str(value)
    if not math.isfinite(value):
        return "–"
    if isinstance(value, int):
        return f"{value:,}"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}"


#: Display names of coding systems (``system|code`` texts are shortened).
CODE_SYSTEMS = {
    "http://hl7.org/fhir/sid/icd-10-cm": "ICD-10-CM",
    "http://hl7.org/fhir/sid/icd-10": "ICD-10",
    "http://snomed.info/sct": "SNOMED CT",
    "http://loinc.org": "LOINC",
    "http://www.nlm.nih.gov/research/umls/rxnorm": "RxNorm",
    "https://cartwin.org/fhir/CodeSystem/local": "local",
}
_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")
#: UCUM code -> unit as clinicians write it; the one table the report uses
#: for tables, axes and texts (grading reasons, notes).
HUMAN_UNITS = {
    "/uL": "cells/µL",
    "{copies}/ug": "copies/µg DNA",
    "10*9/L": "×10⁹/L",
    "Cel": "°C",
    "mm[Hg]": "mmHg",
    "d./uL": "cells/µL·day",
    "d.{copies}/ug": "copies/µg·day",
    "{cells}": "cells",
    "{score}": "points",
    "mg/m2": "mg/m²",
    "cm2": "cm²",
    "/min": "per minute",
    "/d": "per day",
    "d": "days",
    "1": "",
}
#: Units replaced inside free text: codes that cannot be mistaken for words
#: or numbers there (not ``d`` or ``1``).
_TEXT_UNITS = re.compile(
    r"(?<![\w\[\]{}*./])("
    + "|".join(re.escape(code) for code in sorted(HUMAN_UNITS, key=len, reverse=True)
               if len(code) >= 3)
    + r")(?![\w\[\]{}*/])"
)
#: An ISO 8601 date-time inside free text.
_ISO_INSTANT = re.compile(
    r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2})?"
)


def fmt_code(text: str) -> str:
    """``system|code`` with a known system shown by name: ``ICD-10-CM C83.30``."""
    system, bar, code = text.rpartition("|")
    if not bar:
        return text
    return f"{CODE_SYSTEMS.get(system, system)} {code}"


def fmt_scientific(value: float) -> str:
    """``1.56 × 10⁸`` for large or small numbers, :func:`fmt_number` otherwise."""
    if value == 0 or not math.isfinite(value) or 1e-3 <= abs(value) < 1e6:
        return fmt_number(value)
    exponent = math.floor(math.log10(abs(value)))
    mantissa = value / 10.0**exponent
    return f"{mantissa:.3g} × 10{str(exponent).translate(_SUPERSCRIPT)}"


def fmt_unit(unit: Any) -> str:
    """UCUM code as clinicians write it: ``10*9/L`` -> ``×10⁹/L``.

    Codes in :data:`HUMAN_UNITS` are looked up; others lose their braces and
    ``10*`` becomes ``10^`` (``{cells}`` -> ``cells``).
    """
    text = "" if unit is None else str(unit)
    if text in HUMAN_UNITS:
        return HUMAN_UNITS[text]
    return text.replace("{", "").replace("}", "").replace("10*", "10^")


def fmt_text(text: Any, offset: dt.timedelta) -> str:
    """Free text with ISO instants in site time and UCUM units made readable.

    ``"fever 38.2 Cel at 2023-12-13T01:00:00+00:00"`` at UTC+01:00 becomes
    ``"fever 38.2 °C at 2023-12-13 02:00"``.
    """
    text = _ISO_INSTANT.sub(lambda m: fmt_time(m.group(0), offset), str(text))
    return _TEXT_UNITS.sub(lambda m: HUMAN_UNITS[m.group(1)], text)


def parse_time(value: Any) -> dt.datetime | None:
    """ISO 8601 text (or a datetime) to an aware datetime; naive means UTC."""
    if value is None or value == "":
        return None
    when = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(value)
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def fmt_time(value: Any, offset: dt.timedelta) -> str:
    """Site-local ``YYYY-MM-DD HH:MM`` of an instant, ``–`` when absent."""
    when = parse_time(value)
    if when is None:
        return "–"
    return when.astimezone(dt.timezone(offset)).strftime("%Y-%m-%d %H:%M")


def fmt_utc(value: Any) -> str:
    """``YYYY-MM-DD HH:MM UTC`` of an instant (seconds dropped)."""
    return f"{fmt_time(value, dt.timedelta(0))} UTC"


def fmt_interval(lower: Any, upper: Any) -> str:
    """``lower – upper`` or ``–``."""
    if lower is None and upper is None:
        return "–"
    return f"{fmt_number(lower)} – {fmt_number(upper)}"


def fmt_day_span(start: Any, end: Any) -> str:
    """``day 0`` for one study day, ``days -12 to -5`` for several."""
    if start is None and end is None:
        return "–"
    if start == end or end is None:
        return f"day {start}"
    return f"days {start} to {end}"


def _fmt_days(start: Any, end: Any) -> str:
    if start is None and end is None:
        return "–"
    if start == end or end is None:
        return f"{start}"
    return f"{start} to {end}"


def _plural(count: int, word: str, plural: str | None = None) -> str:
    """``1 measurement``, ``2 measurements``."""
    return f"{count} {word if count == 1 else plural or word + 's'}"


def _day_range(axis: TimeAxis, days: tuple[int, int] | None) -> tuple | None:
    """x limits covering whole study days ``days[0]`` to ``days[1]``."""
    if days is None or not axis.relative:
        return None
    return axis.day_start(days[0]), axis.day_start(days[1] + 1)


def _x_of(axis: TimeAxis, time: Any, study_day: Any) -> Any:
    """Plot position from an instant, else from a study day (its midnight)."""
    when = parse_time(time)
    if when is not None:
        return axis.x(when)
    if isinstance(study_day, (int, float)) and axis.relative:
        return axis.day_start(study_day)
    return None


# -- sections ------------------------------------------------------------------
def _header(record: PatientRecord, version: TwinVersion, axis: TimeAxis) -> dict:
    pseudonym = record.facts.pseudonym
    return {
        "pseudonym": pseudonym,
        "version_id": version.version_id,
        "created_at": fmt_utc(version.created_at),
        "offset": plots.format_offset(axis.offset),
        "mismatch": version.pseudonym != pseudonym,
        "version_pseudonym": version.pseudonym,
    }


def _facts(record: PatientRecord, axis: TimeAxis) -> dict[str, Any]:
    facts, infusion = record.facts, record.infusion
    diagnosis = facts.diagnosis or "not recorded"
    if facts.diagnosis_code:
        diagnosis += f" ({fmt_code(facts.diagnosis_code)})"
    rows = [
        ("Pseudonym", facts.pseudonym),
        ("Age", f"{facts.age_years} years" if facts.age_years is not None
         else "not recorded"),
        ("Sex", facts.sex or "not recorded"),
        ("Diagnosis", diagnosis),
        ("Disease group", facts.disease or "not recorded"),
        ("CAR T product", facts.product or (infusion.name if infusion else "")
         or "not recorded"),
        ("Infusion (day 0)", fmt_time(infusion.start, axis.offset) if infusion
         else "no infusion recorded"),
        ("Dose", _fmt_dose(infusion)),
        ("Site time", f"{plots.format_offset(axis.offset)} (all times shown)"),
    ]
    return {"rows": rows}


def _fmt_dose(event: Event | None) -> str:
    if event is None or event.dose is None:
        return "not recorded"
    return f"{fmt_scientific(event.dose)} {fmt_unit(event.dose_unit)}".strip()


def _journey(outputs: dict, axis: TimeAxis) -> dict[str, Any]:
    phases = _require(outputs, "journey")
    if not phases:
        raise _Unavailable("no journey phase was found in the record")
    rows, bars = [], []
    for phase in phases:
        rows.append({
            "phase": phase["phase"],
            "start": fmt_time(phase.get("start"), axis.offset),
            "end": fmt_time(phase.get("end"), axis.offset),
            "days": _fmt_days(phase.get("study_day_start"), phase.get("study_day_end")),
        })
        start = _x_of(axis, phase.get("start"), phase.get("study_day_start"))
        end = _x_of(axis, phase.get("end"), phase.get("study_day_end"))
        bars.append((str(phase["phase"]), start, end))
    alt = "Treatment journey: " + ", ".join(name for name, _, _ in bars) + "."
    plot = plots.plot_journey(bars, axis, alt=alt)
    return {"rows": rows, "plot": Markup(plot) if plot else None,
            "offset": plots.format_offset(axis.offset)}


# -- kinetics --------------------------------------------------------------------
def _kinetics(record: PatientRecord, outputs: dict) -> dict[str, Any]:
    kinetics = _require(outputs, "kinetics")
    quantity = kinetics.get("quantity") or "cart_flow"
    unit = kinetics.get("unit") or canonical_unit(quantity)
    other = _other_assay(quantity)
    fitted = _assay_series(record, quantity, unit, "(fitted)")
    compared = _assay_series(
        record, other, canonical_unit(other), "(not fitted)",
        title=f"{_assay(other)[0]} by {_assay(other)[1]}: shown for comparison, "
        "not used by the fit")
    compared = compared if compared is not None and compared.t else None
    data = KineticsPlot(
        observed=fitted or AssaySeries(f"{_assay(quantity)[0]} ({fmt_unit(unit)})"),
        t_grid=kinetics.get("t_days") or (), median=kinetics.get("median") or (),
        lower=kinetics.get("lower") or (), upper=kinetics.get("upper") or (),
        interval=kinetics.get("interval"),
        cmax=_cmax_point(kinetics.get("derived") or {}), other=compared)
    plot = plots.plot_kinetics(data, alt=_kinetics_alt(kinetics, fitted, compared))
    return {
        "summary": _fit_summary(kinetics, fitted, compared),
        "diagnostics": _fit_diagnostics(kinetics, quantity, unit),
        "derived": _stat_rows(kinetics.get("derived") or {}, DERIVED_LABELS),
        "parameters": _parameter_rows(kinetics.get("parameters") or {}),
        "plot": Markup(plot) if plot else None,
        "plot_note": "" if plot else _no_kinetics_plot(record),
        "fitted": _assay(quantity)[1],
        "other": _assay(other)[1] if compared is not None else "",
    }


def _other_assay(quantity: str) -> str:
    return "cart_qpcr" if quantity == "cart_flow" else "cart_flow"


def _assay(quantity: str) -> tuple[str, str]:
    """What an assay measures and its method: ``("CAR T cells", "flow-cytometry")``."""
    return ASSAYS.get(quantity, (quantity, quantity))


def _assay_series(record: PatientRecord, quantity: str, unit: str, legend: str, *,
                  title: str = "") -> AssaySeries | None:
    """Observations of one assay in days since infusion (None: no infusion)."""
    if record.infusion_time is None:
        return None
    series = record.series(quantity)
    name, method = _assay(quantity)
    return AssaySeries(
        label=f"{name} ({fmt_unit(unit)})", title=title, legend=f"{method} {legend}",
        t=series.t_days.tolist(), y=series.values.tolist(),
        censored=series.below_lloq.tolist())


def _fit_summary(kinetics: dict, fitted: AssaySeries | None,
                 compared: AssaySeries | None) -> str:
    """A few plain sentences on what the fit used and how it went."""
    status = str(kinetics.get("status") or "unknown")
    reason = str(kinetics.get("reason") or "")
    quantity = kinetics.get("quantity") or "cart_flow"
    method = _assay(quantity)[1]
    n_obs, n_below = kinetics.get("n_obs") or 0, kinetics.get("n_censored") or 0
    if status == "unavailable":
        return f"No fit: {reason}" if reason else "No fit."
    if status == "prior_only" or not n_obs:
        text = (f"No {method} measurement after the infusion: the forecast is the "
                "population prior only.")
    else:
        text = (f"Fit to {_plural(n_obs, f'{method} measurement')} ({n_below} below "
                f"the limit of quantification): {FIT_STATUS_TEXT.get(status, status)}.")
        if "from the prior only" in reason:
            text += " The forecast and its interval are from the population prior only."
    before = sum(t < 0 for t in fitted.t) if fitted is not None else 0
    if before:
        text += (f" {_plural(before, 'sample')} taken before the infusion "
                 f"{'was' if before == 1 else 'were'} not used.")
    if compared is not None:
        other = _assay(_other_assay(quantity))[1]
        text += (f" {_plural(len(compared.t), f'{other} measurement')} shown for "
                 "comparison; not used by the fit.")
    return text


def _fit_diagnostics(kinetics: dict, quantity: str, unit: str) -> list[tuple]:
    interval = kinetics.get("interval")
    return [
        ("Fitted quantity", f"{quantity} ({fmt_unit(unit)})"),
        ("Fit status", str(kinetics.get("status") or "unknown")),
        ("Optimiser report", str(kinetics.get("reason") or "–")),
        ("Measurements used", fmt_number(kinetics.get("n_obs"))),
        ("Below the limit of quantification", fmt_number(kinetics.get("n_censored"))),
        ("Forecast interval", f"{interval * 100:.0f} %" if interval else "–"),
    ]


def _kinetics_alt(kinetics: dict, fitted: AssaySeries | None,
                  compared: AssaySeries | None) -> str:
    """Text alternative of the kinetics figure."""
    parts = ["CAR T kinetics"]
    after = [t for t in fitted.t if t >= 0] if fitted is not None else []
    if after:
        parts.append(f"{len(after)} measurements of {fitted.label} after the "
                     f"infusion, up to day {max(after):.0f}")
    if kinetics.get("t_days"):
        parts.append(f"forecast median and interval to day "
                     f"{max(kinetics['t_days']):.0f}")
    if compared is not None:
        parts.append(f"{len(compared.t)} measurements of {compared.label}, not fitted")
    return "; ".join(parts) + "."


def _no_kinetics_plot(record: PatientRecord) -> str:
    if record.infusion_time is None:
        return "no plot: the record has no infusion, so no days since infusion"
    return "no plot: no CAR T observation and no forecast"


def _cmax_point(derived: dict) -> tuple[float, float] | None:
    cmax = (derived.get("cmax") or {}).get("median")
    tmax = (derived.get("tmax") or {}).get("median")
    if isinstance(cmax, (int, float)) and isinstance(tmax, (int, float)):
        return float(tmax), float(cmax)
    return None


def _stat_rows(stats: dict, labels: dict[str, str]) -> list[dict[str, str]]:
    rows = []
    for name, stat in stats.items():
        stat = stat if isinstance(stat, dict) else {"median": stat}
        rows.append({
            "key": name,
            "name": labels.get(name, name),
            "map": fmt_number(stat.get("map")),
            "median": fmt_number(stat.get("median")),
            "interval": fmt_interval(stat.get("lower"), stat.get("upper")),
            "unit": fmt_unit(stat.get("unit")) or "–",
        })
    return rows


def _parameter_rows(parameters: dict) -> list[dict[str, str]]:
    """Parameter rows with a plain name, the symbol and a meaning."""
    rows = _stat_rows(parameters, {k: v[0] for k, v in PARAMETER_GLOSSARY.items()})
    for row in rows:
        row["meaning"] = PARAMETER_GLOSSARY.get(row["key"], ("", ""))[1]
        stat = parameters[row["key"]]
        median = stat.get("median") if isinstance(stat, dict) else stat
        if row["key"] in _RATES and isinstance(median, (int, float)) and median > 0:
            row["meaning"] += f"; half-life {fmt_number(math.log(2) / median)} days"
    return rows


# -- scores ------------------------------------------------------------------------
def _scores(outputs: dict, axis: TimeAxis) -> dict[str, Any]:
    scores = _require(outputs, "scores")
    if not scores:
        raise _Unavailable("no score was computed for this twin version")
    rows = []
    for score in scores:
        window = score.get("window")
        rows.append({
            "name": score["name"],
            "value": fmt_number(score.get("value")),
            "category": _score_category(score),
            "timepoint": score.get("timepoint") or "",
            "window": fmt_day_span(window[0], window[1]) if window else "–",
            "reference": score.get("reference") or "",
            "message": fmt_text(score.get("message") or "", axis.offset),
            "missing": ", ".join(QUANTITY_NAMES.get(m, str(m))
                                 for m in score.get("missing") or ()),
            "inputs": [_input_row(item, axis) for item in score.get("inputs") or ()],
        })
    return {"rows": rows, "offset": plots.format_offset(axis.offset)}


def _score_category(score: dict) -> str:
    """The score's risk category; say so when a computed score has no cut-off."""
    if score.get("category"):
        return str(score["category"])
    value = score.get("value")
    return "no published cut-off" if isinstance(value, (int, float)) else "–"


def _input_row(item: dict, axis: TimeAxis) -> dict[str, str]:
    """One score input: name, value, unit, when; source id kept for a tooltip."""
    prefix = {"below": "< ", "above": "> "}.get(item.get("censored") or "", "")
    time = fmt_time(item.get("time"), axis.offset)
    offset = plots.format_offset(axis.offset)
    title = [] if time == "–" else [f"measured {time} ({offset})"]
    if item.get("source_id"):
        title.append(f"source {item['source_id']}")
    return {
        "name": QUANTITY_NAMES.get(item["name"], str(item["name"])),
        "value": prefix + fmt_number(item.get("value")),
        "unit": fmt_unit(item.get("unit")),
        "when": _when(item.get("study_day"), time),
        "title": "; ".join(title) or "no time or source recorded",
    }


def _when(study_day: Any, time: str) -> str:
    """``day -5`` when there is a study day, else the site-local time."""
    if isinstance(study_day, (int, float)) and not isinstance(study_day, bool):
        return f"day {fmt_number(study_day)}"
    return time


# -- labs --------------------------------------------------------------------------
def _labs(record: PatientRecord, outputs: dict, axis: TimeAxis) -> dict[str, Any]:
    if not any(record.observations_of(q) for q, _ in LAB_PANELS):
        names = ", ".join(title for _, title in LAB_PANELS)
        raise _Unavailable(f"the record holds no {names} values")
    marks, captions = _score_marks(outputs.get("scores"), axis)
    panels = []
    for quantity, title in LAB_PANELS:
        rows = record.observations_of(quantity)
        panels.append(Panel(
            title=title, unit=fmt_unit(canonical_unit(quantity)),
            x=[axis.x(o.time) for o in rows], y=[o.value for o in rows],
            marks=marks.get(quantity, ()), log=quantity in LOG_LABS,
            ref_lines=LAB_THRESHOLDS.get(quantity, ())))
    markers = _treatment_markers(record, axis)
    alt = ("Laboratory trajectories: " + ", ".join(t for _, t in LAB_PANELS)
           + " against " + axis.label
           + "".join(f"; {m.label} marked" for m in markers) + ".")
    plot = plots.plot_panels(panels, axis, prefix="labs", markers=markers, alt=alt)
    return {"plot": Markup(plot), "captions": captions,
            "markers": [m.label for m in markers],
            "thresholds": [text for lines in LAB_THRESHOLDS.values()
                           for _, text in lines]}


def _treatment_markers(record: PatientRecord, axis: TimeAxis) -> list[Marker]:
    """Infusion (a line at day 0) and lymphodepletion (a band over its days)."""
    markers = []
    depletion = record.events_of("lymphodepletion")
    if depletion:
        start = min(e.start for e in depletion)
        end = max(e.end or e.start for e in depletion)
        markers.append(Marker("lymphodepletion", axis.x(start), axis.x(end),
                              colour="tab:purple"))
    if record.infusion_time is not None:
        markers.append(Marker("CAR T infusion (day 0)", axis.x(record.infusion_time)))
    return markers


def _score_marks(scores: Any, axis: TimeAxis) -> tuple[dict, list[str]]:
    """Score inputs on the lab panels: quantity -> [(x, y)], and their captions."""
    used: dict[tuple, list[str]] = {}
    for score in scores if isinstance(scores, list) else ():
        text = f"{score.get('name')} = {fmt_number(score.get('value'))}"
        for item in score.get("inputs") or ():
            quantity = item.get("name")
            x = _x_of(axis, item.get("time"), item.get("study_day"))
            if quantity not in dict(LAB_PANELS) or x is None:
                continue
            key = (quantity, x, _input_value(item, quantity), _input_text(item, axis))
            used.setdefault(key, []).append(text)
    marks: dict[str, list[tuple]] = {}
    captions = []
    for (quantity, x, y, value_text), texts in used.items():
        marks.setdefault(quantity, []).append((x, y))
        captions.append(f"{value_text}: used by {', '.join(dict.fromkeys(texts))}")
    return marks, captions


def _input_text(item: dict, axis: TimeAxis) -> str:
    """``CRP 12.3 mg/L (day -5)``."""
    row = _input_row(item, axis)
    return f"{row['name']} {row['value']} {row['unit']} ({row['when']})"


def _input_value(item: dict, quantity: str) -> float | None:
    value = item.get("value")
    if not isinstance(value, (int, float)):
        return None
    try:
        return to_canonical(value, item.get("unit") or "", quantity)
    except CartwinError:
        return None  # drawn as a vertical line at the input's time


# -- CRS and ICANS -----------------------------------------------------------------
def _grading(
    record: PatientRecord, outputs: dict, axis: TimeAxis, key: str
) -> dict[str, Any]:
    grading = _require(outputs, key)
    # "timeline" is the documented key; "points" is accepted as its alias.
    timeline = grading.get("timeline") or grading.get("points") or []
    daily = grading.get("daily_max") or []
    if not timeline and not daily:
        if not axis.relative:
            return _not_graded(grading, axis)
        reason = grading.get("message") or "no grading instant (no infusion or no data)"
        raise _Unavailable(fmt_text(reason, axis.offset))
    steps = [(_x_of(axis, p.get("time"), p.get("study_day")), p["grade"])
             for p in timeline]
    window = _grade_window(timeline, daily) if axis.relative else None
    data = GradePlot(
        title=f"{key.upper()} grade (ASTCT 2019)",
        steps=[(x, g) for x, g in steps if x is not None],
        daily=[(axis.day_start(d["study_day"]), d["grade"]) for d in daily]
        if axis.relative else [],
        events=_event_marks(record, axis, GRADE_EVENTS[key]),
        aux=_aux_panel(record, axis, key),
        xlim=_day_range(axis, window),
    )
    max_grade = _fmt_max_grade(grading, axis)
    plot = plots.plot_grade(data, axis, key, alt=(
        f"{key.upper()} grade over time, maximum grade {max_grade}, with treatments"
        + (" and " + data.aux.title if data.aux is not None else "") + "."))
    return {
        **_grading_texts(grading, axis),
        "max_grade": max_grade,
        "daily": _grade_runs(daily),
        "changes": _grade_changes(timeline, axis),
        "events": _event_rows(record, axis, GRADE_EVENTS[key]),
        "plot": Markup(plot) if plot else None,
        "window": f"study days {window[0]} to {window[1]}" if window else "",
    }


def _grading_texts(grading: dict, axis: TimeAxis) -> dict[str, Any]:
    return {
        "notes": [fmt_text(n, axis.offset) for n in grading.get("notes") or ()],
        "message": fmt_text(grading.get("message") or "", axis.offset),
        "reference": str(grading.get("reference") or ""),
        "offset": plots.format_offset(axis.offset),
    }


def _not_graded(grading: dict, axis: TimeAxis) -> dict[str, Any]:
    """Section of a patient without infusion: nothing to grade, say so."""
    return {
        **_grading_texts(grading, axis),
        "max_grade": NO_INFUSION, "daily": [], "changes": [], "events": [],
        "plot": None, "window": "",
    }


def _fmt_max_grade(grading: dict, axis: TimeAxis) -> str:
    if not axis.relative:
        return NO_INFUSION
    grade = grading.get("max_grade")
    return "not graded" if grade is None else fmt_number(grade)


#: Days shown after the last day with a grade above 0 (at least to day 14).
_AFTER_LAST_GRADE_DAYS = 7
_MIN_WINDOW_END_DAY = 14


def _grade_window(timeline: list, daily: list) -> tuple[int, int] | None:
    """Study days shown: -1 to a week after the last positive grade (>= day 14)."""
    days = [p.get("study_day") for p in (*daily, *timeline)]
    days = [d for d in days if isinstance(d, (int, float))]
    if not days:
        return None
    positive = [p.get("study_day") for p in (*daily, *timeline) if p["grade"]]
    positive = [d for d in positive if isinstance(d, (int, float))]
    end = max([_MIN_WINDOW_END_DAY, *(d + _AFTER_LAST_GRADE_DAYS for d in positive)])
    return -1, int(max(min(end, max(days)), 0))


def _grade_runs(daily: list[dict]) -> list[dict[str, str]]:
    """Daily maximum grades as runs of equal grade: ``days 6 to 90: 0``."""
    runs: list[list] = []
    for item in sorted(daily, key=lambda d: d["study_day"]):
        day, grade = item["study_day"], item["grade"]
        if runs and runs[-1][2] == grade and runs[-1][1] == day - 1:
            runs[-1][1] = day
        else:
            runs.append([day, day, grade])
    return [{"days": _fmt_days(a, b), "grade": fmt_number(g)} for a, b, g in runs]


def _grade_changes(timeline: list[dict], axis: TimeAxis) -> list[dict[str, str]]:
    """Timeline points where the grade changes, with the reasons in site time."""
    rows, previous = [], None
    for point in timeline:
        if point["grade"] == previous:
            continue
        previous = point["grade"]
        reasons = (fmt_text(r, axis.offset) for r in point.get("reasons") or ())
        rows.append({
            "time": fmt_time(point.get("time"), axis.offset),
            "study_day": fmt_number(point.get("study_day")),
            "grade": fmt_number(point["grade"]),
            "reasons": "; ".join(reasons),
        })
    return rows


def _event_label(event: Event) -> str:
    return f"{event.kind} ({event.detail})" if event.detail else event.kind


def _event_marks(record: PatientRecord, axis: TimeAxis, kinds: tuple) -> list:
    marks = []
    for event in record.events_of(*kinds):
        end = axis.x(event.end) if plots.is_span(event.start, event.end) else None
        marks.append((event.kind, axis.x(event.start), end, _event_label(event)))
    return marks


def _event_rows(record: PatientRecord, axis: TimeAxis, kinds: tuple) -> list[dict]:
    rows = []
    for event in record.events_of(*kinds):
        dose = (f"{fmt_number(event.dose)} {fmt_unit(event.dose_unit)}".strip()
                if event.dose is not None else "–")
        rows.append({
            "event": _event_label(event), "name": event.name or "–",
            "start": fmt_time(event.start, axis.offset),
            "end": fmt_time(event.end, axis.offset), "dose": dose,
            "study_day": fmt_number(record.study_day(event.start))
            if axis.relative else "–",
        })
    return rows


def _aux_panel(record: PatientRecord, axis: TimeAxis, key: str) -> Panel | None:
    quantity = "temperature" if key == "crs" else "ice_score"
    rows = record.observations_of(quantity)
    if not rows:
        return None
    x, y = [axis.x(o.time) for o in rows], [o.value for o in rows]
    if key == "crs":
        return Panel("Body temperature", fmt_unit("Cel"), x, y,
                     ref_lines=((FEVER_CELSIUS, "fever 38 °C"),))
    return Panel("ICE score (10 = normal, 7–9 = grade 1)", "points", x, y,
                 ylim=(-0.3, 10.5))


def _provenance(version: TwinVersion) -> dict[str, Any]:
    from cartwin import __version__

    posterior = version.posterior if isinstance(version.posterior, dict) else {}
    rows = [
        ("Version id", version.version_id),
        ("Parent version", version.parent_id or "none (first version)"),
        ("Created at", fmt_utc(version.created_at)),
        ("Data hash (SHA-256)", version.data_hash),
        ("Model", f"{version.model_name} {version.model_version}"),
        ("cartwin version (model run)", version.package_version),
        ("cartwin version (report)", __version__),
        ("Posterior", ", ".join(f"{k}: {posterior[k]}" for k in ("method", "status")
                                if k in posterior) or "–"),
    ]
    settings = json.dumps(version.settings, indent=2, sort_keys=True, default=str)
    return {"rows": rows, "settings": settings}
