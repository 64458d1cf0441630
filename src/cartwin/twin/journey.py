"""Patient journey phases from a record's events.

The phases follow the CAR T journey of ``DESIGN.md``: leukapheresis, bridging,
lymphodepletion, infusion (day 0), acute phase (days 0 to 28) and follow-up
(after day 28). A phase is listed only when the record holds evidence of it;
the acute phase and follow-up need an infusion. The 28-day acute window is the
window of the early toxicities graded by ASTCT (Lee et al. 2019,
doi:10.1016/j.bbmt.2018.12.758) and of AUC0-28d; it is a convention, not a rule
of any guideline.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from cartwin.record.model import Event, PatientRecord

#: Length of the acute phase after infusion, in days.
ACUTE_PHASE_DAYS = 28
_EVENT_PHASES = ("leukapheresis", "bridging", "lymphodepletion", "infusion")


def journey_phases(record: PatientRecord) -> list[dict[str, Any]]:
    """Return the journey phases present in ``record``, in time order.

    Returns
    -------
    list of dict
        Each with ``phase``, ``start``/``end`` (ISO 8601 UTC) and
        ``study_day_start``/``study_day_end`` (``None`` without an infusion).
    """
    phases = []
    for phase in _EVENT_PHASES:
        events = [e for e in record.events_of(phase) if e.detail != "requested"]
        if events:
            phases.append(_span(record, phase, events[0].start, _last_end(events)))
    infusion = record.infusion_time
    if infusion is not None:
        acute_end = infusion + dt.timedelta(days=ACUTE_PHASE_DAYS)
        phases.append(_span(record, "acute phase", infusion, acute_end))
        last = _last_data_instant(record)
        if last is not None and last > acute_end:
            phases.append(_span(record, "follow-up", acute_end, last))
    return phases


def current_phase(record: PatientRecord, now: dt.datetime) -> str:
    """Name of the phase the patient is in at ``now`` (the latest one started)."""
    name = "pre-treatment"
    for phase in journey_phases(record):
        if dt.datetime.fromisoformat(phase["start"]) <= now:
            name = phase["phase"]
    return name


def _last_end(events: list[Event]) -> dt.datetime:
    return max((e.end or e.start) for e in events)


def _last_data_instant(record: PatientRecord) -> dt.datetime | None:
    instants = [o.time for o in record.observations]
    instants += [(e.end or e.start) for e in record.events]
    return max(instants) if instants else None


def _span(
    record: PatientRecord, phase: str, start: dt.datetime, end: dt.datetime
) -> dict[str, Any]:
    has_day = record.infusion_time is not None
    return {
        "phase": phase,
        "start": start.isoformat(),
        "end": end.isoformat(),
        "study_day_start": record.study_day(start) if has_day else None,
        "study_day_end": record.study_day(end) if has_day else None,
    }
