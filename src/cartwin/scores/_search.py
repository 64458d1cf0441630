"""Where a score looks for its inputs in a record, and how values meet cut-offs.

Window rules
------------
Pre-lymphodepletion (the time point of CAR-HEMATOTOX and EASIX-pre):
the last value taken before the start of the first ``lymphodepletion`` event
and no earlier than 7 days before it, i.e. in ``[LD - 7 d, LD)``. When the
record has no lymphodepletion event, the last value on study days -10 to -3
(inclusive, relative to infusion) is used instead. A named study-day window
(``day 0``, ``day +3``) takes the last value on those study days. Each input
is searched on its own: the inputs of one score need not come from one draw.

Cut-offs
--------
Values are compared with cut-offs with a relative tolerance of 1e-9, so that a
value converted from another unit (650 µg/L ferritin becomes
649.9999999999999 ng/mL) still sits *at* its cut-off. Censored values become
intervals: below a limit L the value lies in [0, L), above it in (L, inf); the
open end is represented by ``L * (1 -/+ 1e-6)``, which is inside the interval
and clear of the comparison tolerance.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

from cartwin.record.model import Observation, PatientRecord
from cartwin.scores._result import ScoreInput

#: How far before lymphodepletion a pre-lymphodepletion value may be taken.
PRE_LD_LOOKBACK = dt.timedelta(days=7)
#: Study-day window used when the record has no lymphodepletion event.
FALLBACK_DAYS = (-10, -3)

_REL_TOL = 1e-9
_OPEN_END = 1e-6


@dataclass(frozen=True)
class SearchWindow:
    """Where inputs are searched: an instant interval or a study-day range.

    Attributes
    ----------
    timepoint : str
        Label shown in results (``"pre-lymphodepletion"``, ``"day +3"``).
    days : tuple of (int, int) or None
        Inclusive study-day range; ``None`` when the record has no infusion.
    start, end : datetime.datetime or None
        Instant interval ``[start, end)``; when set it takes precedence.
    text : str
        Phrase naming the window in messages ("between study day -10 and -3").
    unavailable : str
        Non-empty when no window exists; says why.
    """

    timepoint: str
    days: tuple[int, int] | None
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    text: str = ""
    unavailable: str = ""

    def contains(self, record: PatientRecord, when: dt.datetime) -> bool:
        """Whether ``when`` lies inside the window."""
        if self.unavailable:
            return False
        if self.start is not None and self.end is not None:
            return self.start <= when < self.end
        first, last = self.days  # type: ignore[misc]
        return first <= record.study_day(when) <= last


def no_study_day(record: PatientRecord) -> str:
    """Message for a record that has neither infusion nor lymphodepletion."""
    return (
        f"patient {record.facts.pseudonym} has no infusion and no lymphodepletion "
        "event, so no study day exists and no window can be searched"
    )


def pre_lymphodepletion_window(record: PatientRecord) -> SearchWindow:
    """Window of the pre-lymphodepletion time point (see module notes)."""
    ld_events = record.events_of("lymphodepletion")
    has_day = record.infusion_time is not None
    if ld_events:
        ld_start = min(event.start for event in ld_events)
        start = ld_start - PRE_LD_LOOKBACK
        days = None
        if has_day:
            days = (record.study_day(start), record.study_day(ld_start))
        text = (
            "in the 7 days before the first lymphodepletion start "
            f"({ld_start.isoformat()})"
        )
        return SearchWindow("pre-lymphodepletion", days, start, ld_start, text)
    if has_day:
        return study_day_window(record, *FALLBACK_DAYS, timepoint="pre-lymphodepletion")
    return SearchWindow("pre-lymphodepletion", None, unavailable=no_study_day(record))


def study_day_window(
    record: PatientRecord, first: int, last: int, *, timepoint: str = ""
) -> SearchWindow:
    """Window of study days ``first`` to ``last`` inclusive."""
    label = timepoint or f"day {_signed(first)}"
    if not timepoint and first != last:
        label = f"days {_signed(first)}..{_signed(last)}"
    if record.infusion_time is None:
        reason = (
            f"patient {record.facts.pseudonym} has no infusion event, "
            f"so no study day exists for {label}"
        )
        return SearchWindow(label, None, unavailable=reason)
    if first == last:
        text = f"on study day {first}"
    else:
        text = f"between study day {first} and {last}"
    return SearchWindow(label, (first, last), text=text)


def _signed(day: int) -> str:
    return f"{day:+d}" if day else "0"


def latest_inputs(
    record: PatientRecord, quantities: tuple[str, ...], window: SearchWindow
) -> tuple[dict[str, Observation], tuple[str, ...]]:
    """Last observation of each quantity inside ``window``, and those missing."""
    found: dict[str, Observation] = {}
    for quantity in quantities:
        inside = [
            obs
            for obs in record.observations_of(quantity)
            if window.contains(record, obs.time)
        ]
        if inside:
            found[quantity] = inside[-1]
    missing = tuple(q for q in quantities if q not in found)
    return found, missing


def as_input(record: PatientRecord, obs: Observation) -> ScoreInput:
    """Describe an observation as a :class:`ScoreInput`."""
    day = None if record.infusion_time is None else record.study_day(obs.time)
    return ScoreInput(
        name=obs.quantity,
        value=obs.value,
        unit=obs.unit,
        time=obs.time,
        study_day=day,
        source_id=obs.source_id,
        censored=obs.censored,
    )


def missing_message(missing: tuple[str, ...], window: SearchWindow) -> str:
    """Message naming the missing inputs and the window searched."""
    if window.unavailable:
        return window.unavailable
    names = ", ".join(missing)
    return f"no {names} {window.text}"


def compare(value: float, cutoff: float) -> int:
    """Return -1, 0 or 1 as ``value`` is below, at or above ``cutoff``."""
    if math.isclose(value, cutoff, rel_tol=_REL_TOL, abs_tol=0.0):
        return 0
    return -1 if value < cutoff else 1


def value_interval(obs: Observation) -> tuple[float, float]:
    """Interval holding the true value of ``obs`` (a point when exact)."""
    if obs.censored == "below":
        return 0.0, obs.value * (1.0 - _OPEN_END)
    if obs.censored == "above":
        return obs.value * (1.0 + _OPEN_END), math.inf
    return obs.value, obs.value
