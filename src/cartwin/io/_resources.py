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

A period whose end is before its start is the problem ``date-order`` (as in
the other readers). Values, ages and doses are checked against the plausible
ranges of :mod:`cartwin.io._checks`; a CAR T level of exactly 0 becomes a
value censored below the code's ``lloq`` when the code map gives one, else
the problem ``not-detected``.

Free text: event names are the code table's display of the mapped code (the
coding's own display only when the table gives none); a diagnosis keeps the
code table's display, else the coding's ``display``, else the name of its
disease group, and never ``Condition.code.text`` (free text that may hold
anything, names and birth dates included). Every kept string passes
:func:`cartwin.io._checks.clean_text`.
"""

from __future__ import annotations

import functools
import re

from cartwin.errors import UnitError
from cartwin.io._checks import (
    clean_text,
    dose_finding,
    finite_number,
    undetected,
    value_finding,
)
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
        start = ctx.instant(entry, "effectivePeriod.start", period["start"])
        if start is not None and period.get("end"):
            end = ctx.instant(entry, "effectivePeriod.end", period["end"])
            if end is None or not _in_order(ctx, entry, "effectivePeriod", start, end):
                return None
        return start
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
    number = finite_number(value)
    if number is None:
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
        ctx, entry, f"{prefix}valueQuantity.{unit_field}", number, unit, row.target
    )
    censored = _censoring(quantity.get("comparator"))
    converted, censored = undetected(row.target, converted, censored, row.lloq)
    _check_value(ctx, entry, f"{prefix}valueQuantity.value", value, row.target,
                 (converted, censored))  # fmt: skip
    instant, offset = when
    return Observation(
        quantity=row.target,
        time=instant,
        value=converted,
        unit=canonical_unit(row.target),
        censored=censored,
        source_code=_source_code(coding),
        source_value=number,
        source_unit=clean_text(unit),
        source_id=label(entry),
        source_utc_offset_min=offset,
    )


def _check_value(ctx, entry, fld: str, shown, quantity: str, value) -> None:
    """Record the problem of an implausible canonical ``(value, censored)``."""
    finding = value_finding(quantity, *value)
    if finding is not None:
        ctx.problem(finding.code, entry, fld, shown, finding.message)
        raise Skip("problem")


def _source_code(coding: dict) -> str:
    system, code = coding.get("system"), coding.get("code")
    if isinstance(system, str) and isinstance(code, str):
        return _clean_code(system, code)
    return f"{clean_text(system)}|{clean_text(code)}"


@functools.lru_cache(maxsize=4096)
def _clean_code(system: str, code: str) -> str:
    return f"{clean_text(system)}|{clean_text(code)}"


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


def _convert(ctx, entry, fld: str, value: float, unit: str, target: str) -> float:
    try:
        return to_canonical(value, unit, target)
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
        if end is None:
            raise Skip("problem")
    if start is None:
        raise Skip("problem")
    if end is not None and not _in_order(ctx, entry, f"{prefix}Period", start, end):
        raise Skip("problem")
    return start, end


def _in_order(ctx: ImportContext, entry: Entry, fld: str, start, end) -> bool:
    """Whether a period ends at or after its start; records ``date-order``."""
    if end[0] >= start[0]:
        return True
    message = (
        f"ends ({end[0].isoformat()} UTC) before it starts "
        f"({start[0].isoformat()} UTC)"
    )
    ctx.problem("date-order", entry, f"{fld}.end", "", message)
    return False


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
        name=row.display or clean_text(coding.get("display")),
        dose=dose[0],
        dose_unit=dose[1],
        detail=row.detail if detail is None else detail,
        source_code=_source_code(coding),
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
    number = finite_number(value)
    if number is None:
        ctx.problem(
            "non-finite", entry, f"{fld}.value", value, "is not a finite number"
        )
        raise Skip("problem")
    if row.kind != "infusion":
        return number, clean_text(unit)
    match = _CELL_UNIT.match(unit.strip()) if unit.strip() else None
    if match is None:
        message = (
            "a CAR T dose must be a number of cells: UCUM {cells} or 10*N{cells} "
            "(doses per kg body weight must be converted to total cells)"
        )
        ctx.problem("unit", entry, f"{fld}.{unit_field}", repr(unit), message)
        raise Skip("problem")
    cells = number * (10 ** int(match.group(1)) if match.group(1) else 1)
    finding = dose_finding(cells)
    if finding is not None:
        ctx.problem(finding.code, entry, f"{fld}.value", value, finding.message)
        raise Skip("problem")
    return cells, "{cells}"


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
    source_code = _source_code(chosen) if chosen else ""
    display = _diagnosis_display(ctx, chosen, group)
    patient.diagnoses.append(
        Diagnosis(group, display, source_code, _onset(res), order, entry)
    )


#: Display of a diagnosis known only by its disease group (free text).
GROUP_DISPLAYS = {
    "LBCL": "Large B-cell lymphoma",
    "MM": "Multiple myeloma",
    "B-ALL": "B-cell acute lymphoblastic leukaemia",
    "other": "Other malignancy",
}


def _diagnosis_display(ctx: ImportContext, chosen: dict | None, group: str) -> str:
    """Code table display, else the coding's display, else the group's name."""
    if chosen is not None:
        row = ctx.codes.lookup(chosen.get("system"), chosen.get("code"))
        if row is not None and row.target_type == "diagnosis" and row.display:
            return clean_text(row.display)
        display = clean_text(chosen.get("display"))
        if display:
            return display
    return GROUP_DISPLAYS[group]


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
