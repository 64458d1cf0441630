"""Mapping of single FHIR R4 resources to observations, events and diagnoses.

Each ``map_*`` function reads one validated resource (as parsed JSON, with the
standard's element names), appends what it produces to the patient's data in
the :class:`ImportContext`, records problems there, and returns ``None`` when
the resource was used or raises :class:`Skip` with the reason it was not.

Time elements read, in order of preference:

- Observation: ``effectiveDateTime``, ``effectivePeriod.start``,
  ``effectiveInstant``, then ``issued`` (the release time, later than the
  measurement; used only when no effective time is given). ``effectiveTiming``
  is not read.
- Procedure: ``performedDateTime`` or ``performedPeriod`` (start and end).
- MedicationAdministration: ``effectiveDateTime`` or ``effectivePeriod``.
- MedicationRequest: ``authoredOn``.
"""

from __future__ import annotations

import math
import re

from cartwin.errors import UnitError
from cartwin.io._context import Diagnosis, ImportContext, Skip, label
from cartwin.io._disease import coding_group, text_group
from cartwin.io._source import Entry
from cartwin.io.codes import CodeMapping
from cartwin.record.model import Event, Observation
from cartwin.record.units import canonical_unit, to_canonical

UCUM = "http://unitsofmeasure.org"
_CENSORING = {"<": "below", "<=": "below", ">": "above", ">=": "above"}
_VOID = {"entered-in-error", "not-done", "cancelled"}
_VOID_REQUEST = {"entered-in-error", "cancelled", "draft"}
_VOID_CONDITION = {"entered-in-error", "refuted"}
_OBSERVATION_TIMES = ("effectiveDateTime", "effectiveInstant", "issued")
_CELL_UNIT = re.compile(r"^(?:10[*^](\d{1,2})\s*)?(?:\{cells?\}|cells?)?$")


# -- Observation ---------------------------------------------------------------
def map_observation(ctx: ImportContext, entry: Entry) -> None:
    """Map an Observation and its mapped components to observations."""
    res = entry.resource
    parts = _observation_parts(ctx, res)
    if res.get("status") in _VOID:
        raise Skip(f"status {res['status']}")
    if not parts:
        raise Skip("no mapped code")
    patient = ctx.subject(entry)
    when = _observation_time(ctx, entry)
    if when is None:
        raise Skip("problem")
    reasons = []
    for prefix, part, (coding, row) in parts:
        try:
            obs = _observation(ctx, entry, prefix, part, coding, row, when)
        except Skip as skip:
            reasons.append(skip.args[0])
            continue
        patient.observations.append(obs)
    if len(reasons) == len(parts):
        raise Skip(reasons[0])


def _observation_parts(ctx: ImportContext, res: dict) -> list:
    parts = []
    top = ctx.first_mapping("Observation", "code", res.get("code"), "observation")
    if top is not None:
        parts.append(("", res, top))
    for index, comp in enumerate(res.get("component") or ()):
        found = ctx.first_mapping(
            "Observation", "component.code", comp.get("code"), "observation"
        )
        if found is not None:
            parts.append((f"component[{index}].", comp, found))
    return parts


def _observation_time(ctx: ImportContext, entry: Entry):
    res = entry.resource
    period = res.get("effectivePeriod") or {}
    if "effectiveDateTime" not in res and period.get("start"):
        return ctx.instant(entry, "effectivePeriod.start", period["start"])
    for name in _OBSERVATION_TIMES:
        if res.get(name):
            return ctx.instant(entry, name, res[name])
    message = (
        "has no effectiveDateTime, effectivePeriod.start, effectiveInstant or issued"
    )
    ctx.problem("missing-time", entry, "effective[x]", "", message)
    return None


def _observation(ctx, entry, prefix, part, coding, row, when) -> Observation:
    quantity = part.get("valueQuantity")
    if quantity is None and "valueInteger" in part:
        quantity = {"value": part["valueInteger"]}
    if quantity is None:
        raise Skip(_why_no_value(ctx, entry, prefix, part, coding, row))
    value = quantity.get("value")
    if value is None:
        message = (
            f"has code {coding.get('system')}|{coding.get('code')} (mapped to "
            f"{row.target}) but no value"
        )
        ctx.problem("missing-value", entry, f"{prefix}valueQuantity.value", "", message)
        raise Skip("problem")
    if not _finite(value):
        ctx.problem(
            "non-finite",
            entry,
            f"{prefix}valueQuantity.value",
            value,
            "is not a finite number",
        )
        raise Skip("problem")
    unit, unit_field = _unit_of(quantity)
    converted = _convert(
        ctx, entry, f"{prefix}valueQuantity.{unit_field}", value, unit, row.target
    )
    censored = _censoring(quantity.get("comparator"))
    instant, offset = when
    return Observation(
        quantity=row.target,
        time=instant,
        value=converted,
        unit=canonical_unit(row.target),
        censored=censored,
        source_code=f"{coding.get('system')}|{coding.get('code')}",
        source_value=float(value),
        source_unit=unit,
        source_id=label(entry),
        source_utc_offset_min=offset,
    )


def _why_no_value(ctx, entry, prefix: str, part: dict, coding, row) -> str:
    if "dataAbsentReason" in part:
        return "dataAbsentReason"
    other = next((k for k in part if k.startswith("value")), None)
    if other is not None:
        return f"non-numeric value ({other})"
    if not prefix and part.get("component"):
        return "panel without its own value"
    message = (
        f"has code {coding.get('system')}|{coding.get('code')} (mapped to "
        f"{row.target}) but neither a value[x] nor a dataAbsentReason"
    )
    ctx.problem("missing-value", entry, f"{prefix}value[x]", "", message)
    return "problem"


def _unit_of(quantity: dict) -> tuple[str, str]:
    code, unit = quantity.get("code"), quantity.get("unit")
    if code and quantity.get("system") in (None, UCUM):
        return code, "code"
    if unit:
        return unit, "unit"
    return (code, "code") if code else ("", "unit")


def _convert(ctx, entry, fld: str, value, unit: str, target: str) -> float:
    try:
        return to_canonical(float(value), unit, target)
    except UnitError as exc:
        message = (
            str(exc)
            if unit
            else (
                f"no unit given; {target} needs a unit convertible to "
                f"{canonical_unit(target)!r}"
            )
        )
        ctx.problem("unit", entry, fld, repr(unit), message)
        raise Skip("problem") from None


def _censoring(comparator: str | None) -> str | None:
    if comparator is None:
        return None
    if comparator not in _CENSORING:
        raise Skip(f"comparator {comparator}")
    return _CENSORING[comparator]


def _finite(value) -> bool:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return number and math.isfinite(value)


# -- Procedure -------------------------------------------------------------------
def map_procedure(ctx: ImportContext, entry: Entry) -> None:
    """Map a Procedure with a mapped code to an event."""
    res = entry.resource
    found = ctx.first_mapping("Procedure", "code", res.get("code"), "event")
    if res.get("status") in _VOID:
        raise Skip(f"status {res['status']}")
    if found is None:
        raise Skip("no mapped code")
    patient = ctx.subject(entry)
    patient.events.append(_event(entry, found, _span(ctx, entry, "performed")))


def _span(ctx: ImportContext, entry: Entry, prefix: str):
    res = entry.resource
    if res.get(f"{prefix}DateTime"):
        start = ctx.instant(entry, f"{prefix}DateTime", res[f"{prefix}DateTime"])
        return None if start is None else (start, None)
    period = res.get(f"{prefix}Period") or {}
    if not period.get("start"):
        message = f"has no {prefix}DateTime or {prefix}Period.start"
        ctx.problem("missing-time", entry, f"{prefix}[x]", "", message)
        raise Skip("problem")
    start = ctx.instant(entry, f"{prefix}Period.start", period["start"])
    end = None
    if period.get("end"):
        end = ctx.instant(entry, f"{prefix}Period.end", period["end"])
    if start is None:
        raise Skip("problem")
    return start, end


def _event(
    entry: Entry,
    found: tuple[dict, CodeMapping],
    span,
    *,
    dose: tuple[float | None, str] = (None, ""),
    detail: str | None = None,
) -> Event:
    """Event of a mapped coding; ``span`` is ``((start, offset), end)``."""
    if span is None:
        raise Skip("problem")
    (coding, row), ((start, offset), end) = found, span
    return Event(
        kind=row.kind,
        start=start,
        end=None if end is None else end[0],
        name=coding.get("display") or row.display,
        dose=dose[0],
        dose_unit=dose[1],
        detail=row.detail if detail is None else detail,
        source_code=f"{coding.get('system')}|{coding.get('code')}",
        source_id=label(entry),
        source_utc_offset_min=offset,
    )


# -- Medication administration and request ----------------------------------------
def _medication(ctx: ImportContext, entry: Entry):
    res = entry.resource
    if "medicationCodeableConcept" in res:
        return res["medicationCodeableConcept"], None
    reference = (res.get("medicationReference") or {}).get("reference", "")
    target = ctx.resolve(reference, container=res) if reference else None
    if target is None or target.resource.get("resourceType") != "Medication":
        raise Skip("medicationReference not found in the file")
    return target.resource.get("code"), target


def map_administration(ctx: ImportContext, entry: Entry) -> None:
    """Map a MedicationAdministration with a mapped medication to an event."""
    res = entry.resource
    rtype = "MedicationAdministration"
    concept, medication = _medication(ctx, entry)
    found = ctx.first_mapping(rtype, "medication", concept, "event")
    if res.get("status") in _VOID:
        raise Skip(f"status {res['status']}")
    if found is None:
        raise Skip("no mapped code")
    patient = ctx.subject(entry)
    dose_quantity = (res.get("dosage") or {}).get("dose")
    dose = _dose(ctx, entry, dose_quantity, "dosage.dose", found[1])
    span = _span(ctx, entry, "effective")
    patient.events.append(_event(entry, found, span, dose=dose))
    if medication is not None:
        ctx.used_medications.add(id(medication.resource))


def map_request(ctx: ImportContext, entry: Entry) -> None:
    """Map a MedicationRequest to an event with detail ``"requested"``."""
    res = entry.resource
    concept, medication = _medication(ctx, entry)
    found = ctx.first_mapping("MedicationRequest", "medication", concept, "event")
    if res.get("status") in _VOID_REQUEST:
        raise Skip(f"status {res['status']}")
    if found is None:
        raise Skip("no mapped code")
    if found[1].kind == "infusion":
        raise Skip("CAR T infusion request (day 0 comes from administrations)")
    patient = ctx.subject(entry)
    if not res.get("authoredOn"):
        raise Skip("no authoredOn")
    start = ctx.instant(entry, "authoredOn", res["authoredOn"])
    dose_field = "dosageInstruction[0].doseAndRate[0].doseQuantity"
    dose = _dose(ctx, entry, _first_dose_quantity(res), dose_field, found[1])
    span = None if start is None else (start, None)
    patient.events.append(_event(entry, found, span, dose=dose, detail="requested"))
    if medication is not None:
        ctx.used_medications.add(id(medication.resource))


def _first_dose_quantity(res: dict):
    for instruction in res.get("dosageInstruction") or ():
        for dose_rate in instruction.get("doseAndRate") or ():
            if "doseQuantity" in dose_rate:
                return dose_rate["doseQuantity"]
    return None


def _dose(ctx, entry, quantity, fld: str, row: CodeMapping):
    """``(value, unit)`` of a dose; a CAR T dose is converted to ``{cells}``."""
    if not quantity or quantity.get("value") is None:
        return None, ""
    value = quantity["value"]
    unit, unit_field = _unit_of(quantity)
    if not _finite(value):
        ctx.problem(
            "non-finite", entry, f"{fld}.value", value, "is not a finite number"
        )
        raise Skip("problem")
    if row.kind != "infusion":
        return float(value), unit
    match = _CELL_UNIT.match(unit.strip()) if unit.strip() else None
    if match is None:
        message = (
            "a CAR T dose must be a number of cells: UCUM {cells} or 10*N{cells} "
            "(doses per kg body weight must be converted to total cells)"
        )
        ctx.problem("unit", entry, f"{fld}.{unit_field}", repr(unit), message)
        raise Skip("problem")
    scale = 10 ** int(match.group(1)) if match.group(1) else 1
    return float(value) * scale, "{cells}"


# -- Condition ---------------------------------------------------------------------
def map_condition(ctx: ImportContext, entry: Entry, order: int) -> None:
    """Record a Condition naming a disease group as a candidate diagnosis.

    Raises :class:`Skip` when it names none; whether a candidate is used is
    decided when the patient's facts are built (first by onset).
    """
    res = entry.resource
    concept = res.get("code") or {}
    group, chosen = None, None
    for coding in concept.get("coding") or ():
        found = coding_group(coding, ctx.codes)
        ctx.tally.disease("Condition", coding, found)
        if group is None and found is not None:
            group, chosen = found, coding
    if _verification(res) in _VOID_CONDITION:
        raise Skip(f"verificationStatus {_verification(res)}")
    if group is None:
        group = text_group(concept.get("text"))
    if group is None:
        raise Skip("no CAR T disease code")
    patient = ctx.subject(entry)
    source_code = f"{chosen['system']}|{chosen['code']}" if chosen else ""
    display = (chosen or {}).get("display") or concept.get("text", "")
    patient.diagnoses.append(
        Diagnosis(group, display, source_code, _onset(res), order, entry)
    )


def _verification(res: dict) -> str | None:
    for coding in (res.get("verificationStatus") or {}).get("coding") or ():
        return coding.get("code")
    return None


def _onset(res: dict) -> str:
    period = res.get("onsetPeriod") or {}
    for value in (
        res.get("onsetDateTime"),
        period.get("start"),
        res.get("recordedDate"),
    ):
        if isinstance(value, str) and value:
            return value[:10]
    return "9999-12-31"
