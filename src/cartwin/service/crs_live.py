"""Live ASTCT CRS grading: a per-patient cache re-graded incrementally.

Each live patient keeps, in memory, the inputs the CRS grading reads
(temperature, systolic BP and SpO2 observations; infusion, vasopressor,
oxygen, tocilizumab and corticosteroid events) and the graded timeline. When
new vital signs arrive only the instants they can change are graded again,
with :func:`cartwin.scores.crs_timeline` run on a small window of the record:

* a new value at instant ``t`` changes the grade at ``t`` only, except
* a fever (T >= 38 °C) at ``t`` also counts for 24 h after (the fever
  window), so ``[t, t + 24 h]`` is graded again, and
* a fever when tocilizumab or a corticosteroid was given may change whether
  fever is still required at every later instant, so everything from ``t``
  on is graded again.

The window record holds the temperatures from 24 h before the first changed
instant (and the first fever after infusion, which decides masking), the BP
and SpO2 values in the changed span, and every CRS event, so the grades it
gives equal those of the whole record (the tests check this on random
streams). Events arrive by import only; an import rebuilds the patient's
cache from the store.

**Current grade and alerts.** The current grade of a patient is the highest
grade at the evaluation instants of the 24 h up to the latest instant with
data (data time, not wall-clock time: a replayed stream behaves as it did).
An alert is raised when an update raises the current grade. A late value
that raises an old instant without raising the current grade raises none.

References
----------
Lee DW, Santomasso BD, Locke FL, et al. ASTCT consensus grading for cytokine
release syndrome and neurologic toxicity associated with immune effector
cells. Biol Blood Marrow Transplant 2019;25(4):625-638.
doi:10.1016/j.bbmt.2018.12.758
"""

from __future__ import annotations

import bisect
import collections
import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from cartwin.record.model import Observation, PatientFacts, PatientRecord
from cartwin.scores._timeline import GradePoint
from cartwin.scores.crs import (
    FEVER_CELSIUS,
    FEVER_MASKING_KINDS,
    FEVER_WINDOW,
    NOTES,
    REFERENCE,
    CrsTimeline,
    crs_timeline,
)

#: Quantities the CRS grading reads.
CRS_QUANTITIES = ("temperature", "systolic_bp", "spo2")
#: Event kinds the CRS grading reads (the infusion sets day 0).
CRS_EVENT_KINDS = ("infusion", "vasopressor", "oxygen", *FEVER_MASKING_KINDS)
#: Span over which the current grade is the highest grade.
CURRENT_WINDOW = FEVER_WINDOW
_FOREVER = dt.datetime.max.replace(tzinfo=dt.UTC)
#: Fever test with room for rounding (the grading itself decides; this only
#: decides how far to re-grade, so erring high costs time, never accuracy).
_FEVER_FLOOR = FEVER_CELSIUS - 1e-6


def obs_key(obs: Observation) -> tuple:
    """What makes two stored measurements the same (the store's duplicate rule)."""
    return (obs.quantity, obs.time, obs.source_id)


@dataclass(frozen=True)
class GradeChange:
    """A rise of a patient's current CRS grade.

    Attributes
    ----------
    pseudonym : str
        The patient.
    grade_from, grade_to : int
        Current grade before and after the update (0-4).
    point : GradePoint
        The latest point that has the new grade (its instant, driver, reasons).
    """

    pseudonym: str
    grade_from: int
    grade_to: int
    point: GradePoint


class PatientCrs:
    """CRS inputs and graded timeline of one patient, kept up to date."""

    def __init__(self, record: PatientRecord) -> None:
        self.pseudonym = record.facts.pseudonym
        self._site_offset = record.site_utc_offset_min
        self._events = record.events_of(*CRS_EVENT_KINDS)
        self._infusion = record.infusion_time
        self._series = {q: list(record.observations_of(q)) for q in CRS_QUANTITIES}
        self.keys = {obs_key(o) for o in record.observations}
        self.message = ""
        self._times: list[dt.datetime] = []
        self._points: dict[dt.datetime, GradePoint] = {}
        self._grade_span(None, None)

    # -- reading ------------------------------------------------------------
    @property
    def graded(self) -> bool:
        """Whether the patient has an infusion (CRS is graded only after one)."""
        return self._infusion is not None

    def timeline(self) -> CrsTimeline:
        """The whole graded timeline, as :func:`crs_timeline` gives it."""
        points = tuple(self._points[t] for t in self._times)
        return CrsTimeline("ASTCT CRS", points, REFERENCE, self.message, NOTES)

    def current(self) -> tuple[int | None, GradePoint | None]:
        """Current grade (highest over the last 24 h of data) and its latest point."""
        if not self._times:
            return (None, None) if not self.graded else (0, None)
        latest = self._times[-1]
        start = bisect.bisect_left(self._times, latest - CURRENT_WINDOW)
        best: GradePoint | None = None
        for when in self._times[start:]:
            point = self._points[when]
            if best is None or point.grade >= best.grade:
                best = point
        return best.grade, best

    def fresh(self, observations: Iterable[Observation]) -> list[Observation]:
        """The observations not stored yet (nor repeated earlier in the list)."""
        seen, new = set(), []
        for obs in observations:
            key = obs_key(obs)
            if key not in self.keys and key not in seen:
                seen.add(key)
                new.append(obs)
        return new

    # -- updating -----------------------------------------------------------
    def apply(self, stored: list[Observation]) -> GradeChange | None:
        """Take in observations just stored; re-grade; report a rise."""
        self.keys.update(obs_key(o) for o in stored)
        relevant = [o for o in stored if o.quantity in CRS_QUANTITIES]
        for obs in relevant:
            series = self._series[obs.quantity]
            bisect.insort(series, obs, key=_sort_key)
        if not relevant or not self.graded:
            return None
        before, _ = self.current()
        self._grade_span(*self._changed_span(relevant))
        after, point = self.current()
        if point is not None and after > (before or 0):
            return GradeChange(self.pseudonym, before or 0, after, point)
        return None

    def _changed_span(
        self, relevant: list[Observation]
    ) -> tuple[dt.datetime, dt.datetime]:
        low = min(o.time for o in relevant)
        high = low
        masking = any(e.kind in FEVER_MASKING_KINDS for e in self._events)
        for obs in relevant:
            fever = obs.quantity == "temperature" and obs.value >= _FEVER_FLOOR
            if fever and masking:
                return low, _FOREVER
            high = max(high, obs.time + FEVER_WINDOW if fever else obs.time)
        return low, high

    def _grade_span(self, low: dt.datetime | None, high: dt.datetime | None) -> None:
        """Grade again every instant in ``[low, high]`` (everything when None)."""
        timeline = crs_timeline(self._window(low, high))
        self.message = timeline.message
        fresh = [p for p in timeline.points if _inside(p.time, low, high)]
        first = 0 if low is None else bisect.bisect_left(self._times, low)
        last = (
            len(self._times) if high is None else bisect.bisect_right(self._times, high)
        )
        for when in self._times[first:last]:
            del self._points[when]
        # The fresh points are sorted and lie in the span just removed.
        self._times[first:last] = [p.time for p in fresh]
        self._points.update((p.time, p) for p in fresh)

    def _window(
        self, low: dt.datetime | None, high: dt.datetime | None
    ) -> PatientRecord:
        temps = self._series["temperature"]
        chosen = _between(temps, None if low is None else low - FEVER_WINDOW, high)
        first_fever = next(
            (o for o in temps if o.time >= self._infusion and o.value >= _FEVER_FLOOR),
            None,
        ) if self.graded else None  # fmt: skip
        if first_fever is not None and all(o is not first_fever for o in chosen):
            chosen.append(first_fever)
        for quantity in ("systolic_bp", "spo2"):
            chosen += _between(self._series[quantity], low, high)
        return PatientRecord(
            facts=PatientFacts(self.pseudonym),
            observations=tuple(chosen),
            events=self._events,
            site_utc_offset_min=self._site_offset,
        )


def _sort_key(obs: Observation) -> tuple:
    return (obs.time, obs.source_id)


def _between(
    series: list[Observation], low: dt.datetime | None, high: dt.datetime | None
) -> list[Observation]:
    times = [o.time for o in series] if low is not None or high is not None else None
    if times is None:
        return list(series)
    first = 0 if low is None else bisect.bisect_left(times, low)
    last = len(series) if high is None else bisect.bisect_right(times, high)
    return series[first:last]


def _inside(
    when: dt.datetime, low: dt.datetime | None, high: dt.datetime | None
) -> bool:
    return (low is None or when >= low) and (high is None or when <= high)


class LiveCrs:
    """The live CRS caches of many patients, least recently used dropped first.

    Not thread-safe: the service calls it with the store lock held.

    Parameters
    ----------
    max_patients : int
        Patients kept; a dropped patient is rebuilt from the store when next
        needed (its current grade is then taken from the data, so no alert is
        lost or repeated).
    """

    def __init__(self, max_patients: int = 5000) -> None:
        self.max_patients = max_patients
        self._cache: collections.OrderedDict[str, PatientCrs] = (
            collections.OrderedDict()
        )

    def __contains__(self, pseudonym: str) -> bool:
        return pseudonym in self._cache

    def get(self, store, pseudonym: str) -> PatientCrs:
        """The patient's cache, built from ``store`` when absent.

        Raises
        ------
        StoreError
            When the patient is not in the store.
        """
        state = self._cache.get(pseudonym)
        if state is None:
            state = PatientCrs(store.load_record(pseudonym))
            self._cache[pseudonym] = state
            while len(self._cache) > self.max_patients:
                self._cache.popitem(last=False)
        self._cache.move_to_end(pseudonym)
        return state

    def drop(self, pseudonym: str) -> None:
        """Forget a patient's cache (rebuilt from the store when next needed)."""
        self._cache.pop(pseudonym, None)

    def reload(self, store, pseudonym: str) -> GradeChange | None:
        """Rebuild a cached patient from the store (after an import); report a rise.

        Patients not in the cache are left for :meth:`get` to build later.
        """
        old = self._cache.pop(pseudonym, None)
        if old is None:
            return None
        before, _ = old.current()
        state = self.get(store, pseudonym)
        after, point = state.current()
        if point is not None and after is not None and after > (before or 0):
            return GradeChange(pseudonym, before or 0, after, point)
        return None
