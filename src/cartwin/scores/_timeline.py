"""Grade timelines shared by CRS and ICANS grading.

A timeline holds one :class:`GradePoint` per evaluation instant, plus the
maximum grade of each study day and overall. Evaluation instants are the
times of the observations and the starts and ends of the events a grading
rule reads, from the infusion instant on (CRS and ICANS are defined after
immune effector cell therapy only).

An event counts at an instant ``t`` while ``start <= t <= end``. An event
without ``end`` counts from its start for ``open_event_duration`` (default 0:
only at its start instant).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from cartwin.record.model import Event, PatientRecord

#: Citation of the ASTCT consensus grading that CRS and ICANS follow.
ASTCT_REFERENCE = (
    "Lee DW et al. Biol Blood Marrow Transplant 2019;25(4):625-638. "
    "doi:10.1016/j.bbmt.2018.12.758"
)


@dataclass(frozen=True)
class GradePoint:
    """The grade at one evaluation instant.

    Attributes
    ----------
    time : datetime.datetime
        Evaluation instant, timezone-aware UTC.
    study_day : int
        Study day of ``time`` (day 0 = infusion day, site zone).
    grade : int
        Grade 0-4.
    driver : str
        The criterion that set the grade (``"fever"``, ``"hypotension"``,
        ``"hypoxia"``, ``"ICE"``, ``"seizure"``, ...; ``"none"`` at grade 0).
        Ties are joined with ``"+"``.
    reasons : tuple of str
        Human-readable findings behind the grade, including findings that did
        not count (e.g. hypoxia without recorded oxygen support).
    """

    time: dt.datetime
    study_day: int
    grade: int
    driver: str
    reasons: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        """Return a JSON-ready mapping (instant as ISO 8601 string)."""
        return {
            "time": self.time.isoformat(),
            "study_day": self.study_day,
            "grade": self.grade,
            "driver": self.driver,
            "reasons": list(self.reasons),
        }


@dataclass(frozen=True)
class GradeTimeline:
    """Grades over time, with daily and overall maxima.

    Attributes
    ----------
    name : str
        ``"ASTCT CRS"`` or ``"ASTCT ICANS"``.
    points : tuple of GradePoint
        One point per evaluation instant, in time order.
    reference : str
        Short citation with DOI.
    message : str
        Why the timeline is empty, when it is.
    notes : tuple of str
        Conventions applied (thresholds, durations), for the report.
    """

    name: str
    points: tuple[GradePoint, ...]
    reference: str
    message: str = ""
    notes: tuple[str, ...] = field(default=())

    @property
    def daily_max(self) -> dict[int, int]:
        """Highest grade of each study day that has an evaluation instant."""
        result: dict[int, int] = {}
        for point in self.points:
            result[point.study_day] = max(result.get(point.study_day, 0), point.grade)
        return result

    @property
    def max_grade(self) -> int | None:
        """Highest grade over the whole timeline; ``None`` with no points."""
        if not self.points:
            return None
        return max(point.grade for point in self.points)

    def to_dict(self) -> dict:
        """Return a JSON-ready mapping."""
        return {
            "name": self.name,
            "points": [point.to_dict() for point in self.points],
            "daily_max": [
                {"study_day": day, "grade": grade}
                for day, grade in sorted(self.daily_max.items())
            ],
            "max_grade": self.max_grade,
            "reference": self.reference,
            "message": self.message,
            "notes": list(self.notes),
        }


def event_covers(event: Event, when: dt.datetime, open_duration: dt.timedelta) -> bool:
    """Whether ``event`` counts at ``when`` (see module notes)."""
    end = event.end if event.end is not None else event.start + open_duration
    return event.start <= when <= end


def evaluation_instants(
    record: PatientRecord,
    quantities: tuple[str, ...],
    kinds: tuple[str, ...],
    open_duration: dt.timedelta,
) -> list[dt.datetime]:
    """Sorted, unique instants from infusion on at which to evaluate a grade."""
    start = record.infusion_time
    assert start is not None
    instants = {o.time for q in quantities for o in record.observations_of(q)}
    for event in record.events_of(*kinds):
        instants.add(event.start)
        end = event.end if event.end is not None else event.start + open_duration
        instants.add(end)
    return sorted(t for t in instants if t >= start)


def no_infusion_message(record: PatientRecord, what: str) -> str:
    """Message for a timeline that cannot exist without an infusion."""
    return (
        f"patient {record.facts.pseudonym} has no infusion event, so no study day "
        f"exists and {what} is not graded"
    )
