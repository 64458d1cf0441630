"""ICE score and ASTCT ICANS grade (adults and children > 12 years) over time.

The ICANS grade is the most severe of five domains [1]_:

=======================  ==========  ========  ===============  ===================
domain                   grade 1     grade 2   grade 3          grade 4
=======================  ==========  ========  ===============  ===================
ICE score (0-10)         7-9         3-6       0-2              0 and unarousable
depressed consciousness  awakens     awakens   awakens only     unarousable
                         spontan.    to voice  to touch
seizure                  --          --        resolves         prolonged (> 5 min)
                                               rapidly          or repetitive
motor findings           --          --        --               deep focal weakness
raised ICP / edema       --          --        focal edema      diffuse edema
=======================  ==========  ========  ===============  ===================

ICE 10 is grade 0. "ICE 0 and unarousable" is grade 4 through the
consciousness domain; ICE 0 in an awake patient is grade 3.

Record encoding (lead's importer convention, target ``kind:detail``):
``ice_score`` observations (integers 0-10); events ``seizure`` (detail
``"rapid"`` or ``"prolonged"``), ``consciousness`` (``"spontaneous"``,
``"voice"``, ``"tactile"``, ``"unarousable"``), ``motor_weakness`` and
``cerebral_edema`` (``"focal"`` or ``"diffuse"``). A seizure or edema without
detail is graded 3, the least any seizure or edema scores, and the reasons say
so; a consciousness event without a known level raises
:class:`~cartwin.errors.DataError`. The grading assumes the findings have no
other cause (e.g. sedation), which the record cannot tell. Children <= 12
years (CAPD instead of ICE) are not handled.

Instants and event durations follow :mod:`cartwin.scores._timeline`: an ICE
score counts at its own instant only; an event counts from start to end, and
an event without end at its start only unless ``open_event_duration`` is set.

References
----------
.. [1] Lee DW, Santomasso BD, Locke FL, et al. ASTCT consensus grading for
   cytokine release syndrome and neurologic toxicity associated with immune
   effector cells. Biol Blood Marrow Transplant 2019;25(4):625-638.
   doi:10.1016/j.bbmt.2018.12.758
"""

from __future__ import annotations

import datetime as dt
import math

from cartwin.errors import DataError
from cartwin.record.model import Event, Observation, PatientRecord
from cartwin.scores._timeline import (
    ASTCT_REFERENCE,
    GradePoint,
    GradeTimeline,
    evaluation_instants,
    event_covers,
    no_infusion_message,
)

REFERENCE = ASTCT_REFERENCE
CONSCIOUSNESS_GRADES = {"spontaneous": 1, "voice": 2, "tactile": 3, "unarousable": 4}
SEIZURE_GRADES = {"": 3, "rapid": 3, "prolonged": 4}
EDEMA_GRADES = {"": 3, "focal": 3, "diffuse": 4}
ICANS_EVENT_KINDS = ("seizure", "consciousness", "motor_weakness", "cerebral_edema")
NOTES = (
    "ICE 7-9 -> 1, 3-6 -> 2, 0-2 -> 3, 10 -> 0; unarousable -> 4",
    "seizure or edema without detail graded 3",
    "findings assumed not attributable to another cause",
)


class IcansTimeline(GradeTimeline):
    """ASTCT ICANS grade at every evaluation instant, with daily maxima."""


def ice_grade(ice_score: int) -> int:
    """ICANS grade of the ICE domain: 10 -> 0, 7-9 -> 1, 3-6 -> 2, 0-2 -> 3.

    Raises
    ------
    DataError
        When ``ice_score`` is not an integer from 0 to 10.
    """
    if not _valid_ice(ice_score):
        raise DataError(f"ICE score must be an integer 0-10, got {ice_score!r}")
    if ice_score == 10:
        return 0
    if ice_score >= 7:
        return 1
    return 2 if ice_score >= 3 else 3


def icans_grade(
    *,
    ice_score: int | None = None,
    consciousness: str | None = None,
    seizure: str | None = None,
    motor_weakness: bool = False,
    cerebral_edema: str | None = None,
) -> int:
    """ASTCT ICANS grade (0-4): the most severe domain.

    Parameters
    ----------
    ice_score : int or None
        ICE score 0-10, ``None`` when not assessed.
    consciousness : str or None
        ``"spontaneous"``, ``"voice"``, ``"tactile"`` or ``"unarousable"``.
    seizure : str or None
        ``"rapid"``, ``"prolonged"``, or ``""`` (type unknown, graded 3).
    motor_weakness : bool
        Deep focal motor weakness (hemiparesis, paraparesis).
    cerebral_edema : str or None
        ``"focal"``, ``"diffuse"``, or ``""`` (extent unknown, graded 3).

    Examples
    --------
    >>> icans_grade(ice_score=3, seizure="rapid")
    3
    """
    grades = _domain_grades(
        ice_score, consciousness, seizure, motor_weakness, cerebral_edema
    )
    return max(grades.values(), default=0)


def icans_timeline(
    record: PatientRecord, *, open_event_duration: dt.timedelta = dt.timedelta(0)
) -> IcansTimeline:
    """ASTCT ICANS grade of a patient at every evaluation instant after infusion.

    Parameters
    ----------
    record : PatientRecord
        ``ice_score`` observations and ICANS events (see module notes).
    open_event_duration : datetime.timedelta
        How long an event without ``end`` counts (default 0: its start only).

    Returns
    -------
    IcansTimeline
        Empty, with ``message``, when the record has no infusion.
    """
    if record.infusion_time is None:
        message = no_infusion_message(record, "ICANS")
        return IcansTimeline("ASTCT ICANS", (), REFERENCE, message=message, notes=NOTES)
    instants = evaluation_instants(
        record, ("ice_score",), ICANS_EVENT_KINDS, open_event_duration
    )
    ice: dict[dt.datetime, list[Observation]] = {}
    for obs in record.observations_of("ice_score"):
        ice.setdefault(obs.time, []).append(obs)
    events = record.events_of(*ICANS_EVENT_KINDS)
    points = tuple(
        _point_at(record, ice, events, when, open_event_duration) for when in instants
    )
    return IcansTimeline("ASTCT ICANS", points, REFERENCE, notes=NOTES)


def _domain_grades(
    ice_score: int | None,
    consciousness: str | None,
    seizure: str | None,
    motor_weakness: bool,
    cerebral_edema: str | None,
) -> dict[str, int]:
    grades: dict[str, int] = {}
    if ice_score is not None:
        grades["ICE"] = ice_grade(ice_score)
    if consciousness is not None:
        grades["consciousness"] = _lookup(
            "consciousness", consciousness, CONSCIOUSNESS_GRADES
        )
    if seizure is not None:
        grades["seizure"] = _lookup("seizure", seizure, SEIZURE_GRADES)
    if motor_weakness:
        grades["motor weakness"] = 4
    if cerebral_edema is not None:
        grades["cerebral edema"] = _lookup(
            "cerebral edema", cerebral_edema, EDEMA_GRADES
        )
    return grades


def _lookup(domain: str, detail: str, table: dict[str, int]) -> int:
    key = detail.strip().lower()
    if key not in table:
        allowed = ", ".join(repr(k) for k in table)
        raise DataError(
            f"ICANS {domain} detail must be one of {allowed}; got {detail!r}"
        )
    return table[key]


def _point_at(
    record: PatientRecord,
    ice: dict[dt.datetime, list[Observation]],
    events: tuple[Event, ...],
    when: dt.datetime,
    open_duration: dt.timedelta,
) -> GradePoint:
    # The worst finding of each domain at this instant.
    findings: dict[str, object] = {}
    reasons: list[str] = []
    scores = ice.get(when, [])
    if scores:
        worst = min(scores, key=lambda obs: obs.value)
        _check_ice(worst)
        findings["ice_score"] = int(worst.value)
        reasons.append(f"ICE score {int(worst.value)}")
    for event in events:
        if event_covers(event, when, open_duration):
            reasons.append(_note_event(event, findings))

    # Grade = most severe domain.
    grades = _domain_grades(
        findings.get("ice_score"),  # type: ignore[arg-type]
        findings.get("consciousness"),  # type: ignore[arg-type]
        findings.get("seizure"),  # type: ignore[arg-type]
        bool(findings.get("motor_weakness")),
        findings.get("cerebral_edema"),  # type: ignore[arg-type]
    )
    grade = max(grades.values(), default=0)
    driver = "+".join(d for d, g in grades.items() if g == grade) if grade else "none"
    return GradePoint(when, record.study_day(when), grade, driver, tuple(reasons))


def _note_event(event: Event, findings: dict[str, object]) -> str:
    # Keep the most severe detail of each event kind active at the instant.
    table = {
        "consciousness": CONSCIOUSNESS_GRADES,
        "seizure": SEIZURE_GRADES,
        "cerebral_edema": EDEMA_GRADES,
    }.get(event.kind)
    where = event.source_id or event.start.isoformat()
    if table is None:
        findings[event.kind] = True
        return f"{event.kind.replace('_', ' ')} ({where})"
    detail = event.detail.strip().lower()
    domain = event.kind.replace("_", " ")
    grade = _lookup(f"{domain} event {where}", detail, table)
    previous = findings.get(event.kind)
    if previous is None or grade > table[previous]:  # type: ignore[index]
        findings[event.kind] = detail
    if not detail:
        return f"{domain} without detail ({where}): graded as at least 3"
    return f"{domain}: {detail} ({where})"


def _valid_ice(value: float) -> bool:
    return math.isfinite(value) and value == int(value) and 0 <= value <= 10


def _check_ice(obs: Observation) -> None:
    if not _valid_ice(obs.value):
        raise DataError(
            f"ICE score {obs.source_id or obs.time.isoformat()} must be an integer "
            f"0-10, got {obs.value!r}"
        )
