"""ASTCT consensus grade of cytokine release syndrome (CRS) over time.

=====  ==========  ===================================  ==============================
grade  fever       hypotension                          hypoxia (oxygen needed)
=====  ==========  ===================================  ==============================
1      T >= 38 °C  none                                 none
2      T >= 38 °C  not needing vasopressors             low-flow cannula (<= 6 L/min),
                                                        blow-by
3      T >= 38 °C  one vasopressor, with or without     high-flow cannula (> 6 L/min),
                   vasopressin                          facemask, non-rebreather,
                                                        Venturi mask
4      T >= 38 °C  multiple vasopressors (excluding     positive pressure (CPAP,
                   vasopressin)                         BiPAP, intubation)
=====  ==========  ===================================  ==============================

The grade is the more severe of hypotension and hypoxia; fever is needed for
CRS, but once a patient with CRS has had tocilizumab or a corticosteroid,
fever is no longer required and the grade follows hypotension and hypoxia [1]_.
Organ toxicities (CTCAE) do not change the grade and are not read here; grade
5 (death from CRS) is not assigned by this module.

Conventions cartwin chose (the consensus does not fix them):

- **Fever**: a temperature observation >= 38.0 °C taken at or after infusion.
  A fever counts as "CRS present" at every instant up to 24 h after it
  (``fever_window``).
- **Fever not required**: at an instant ``t`` when a fever (as above) was
  recorded at or before ``t`` *and* a ``tocilizumab`` or ``corticosteroid``
  event started between infusion and ``t``. Requiring the earlier fever follows
  the consensus wording ("patients who have CRS then receive..."); a steroid
  given for ICANS alone does not turn later hypoxia into CRS. Antipyretics are
  not counted.
- **Hypotension**: systolic blood pressure < 90 mmHg (``HYPOTENSION_SBP_MMHG``),
  counted at the instant of the measurement only. An active vasopressor means
  hypotension needing vasopressors, whatever the blood pressure read.
- **Vasopressors**: events of kind ``vasopressor``. Vasopressin (``detail`` or
  ``name`` ``"vasopressin"``, or a ``source_code`` that ``codes.csv`` maps to
  ``vasopressor:vasopressin``) never counts towards "multiple". Other agents
  are told apart by ``name`` (case-insensitive), else ``source_code``; unnamed,
  uncoded events together count as one agent.
- **Oxygen**: events of kind ``oxygen``; ``detail`` names the device (see
  :data:`OXYGEN_GRADES`). An empty detail is graded as low flow, and a
  low-flow device with ``dose`` > 6 ``L/min`` as high flow (``codes.csv``
  note). An unknown detail raises :class:`~cartwin.errors.DataError`.
- **SpO2 < 90 % with no oxygen event** active is reported in ``reasons`` as
  hypoxia of unknown support; it does not raise the grade (ASTCT grades
  hypoxia by the support it needs).
- **Instants**: see :mod:`cartwin.scores._timeline` (every temperature, SBP
  and SpO2 time and every start/end of a vasopressor, oxygen, tocilizumab or
  corticosteroid event, from infusion on; open events count at their start
  only unless ``open_event_duration`` is given).

References
----------
.. [1] Lee DW, Santomasso BD, Locke FL, et al. ASTCT consensus grading for
   cytokine release syndrome and neurologic toxicity associated with immune
   effector cells. Biol Blood Marrow Transplant 2019;25(4):625-638.
   doi:10.1016/j.bbmt.2018.12.758
"""

from __future__ import annotations

import bisect
import datetime as dt
import functools
from dataclasses import dataclass

from cartwin.errors import DataError
from cartwin.record.model import Event, PatientRecord
from cartwin.scores import _search
from cartwin.scores._timeline import (
    ASTCT_REFERENCE,
    GradePoint,
    GradeTimeline,
    evaluation_instants,
    event_covers,
    no_infusion_message,
)

REFERENCE = ASTCT_REFERENCE
FEVER_CELSIUS = 38.0
HYPOTENSION_SBP_MMHG = 90.0
HYPOXIA_SPO2_PERCENT = 90.0
LOW_FLOW_MAX_L_PER_MIN = 6.0
FEVER_WINDOW = dt.timedelta(hours=24)
#: Treatments after which fever is no longer required.
FEVER_MASKING_KINDS = ("tocilizumab", "corticosteroid")
#: Oxygen device (``Event.detail``) -> CRS grade of the hypoxia it treats.
OXYGEN_GRADES = {
    "low_flow": 2,
    "blow_by": 2,
    "high_flow": 3,
    "facemask": 3,
    "non_rebreather": 3,
    "venturi": 3,
    "positive_pressure": 4,
    "cpap": 4,
    "bipap": 4,
    "intubation": 4,
    "mechanical": 4,
}
NOTES = (
    "fever: T >= 38.0 Cel, counts for 24 h",
    "hypotension: systolic BP < 90 mm[Hg] (cartwin convention)",
    "fever not required after tocilizumab or corticosteroid following a fever",
    "vasopressin does not count towards multiple vasopressors",
    "SpO2 < 90 % without recorded oxygen is flagged, not graded",
)


class CrsTimeline(GradeTimeline):
    """ASTCT CRS grade at every evaluation instant, with daily maxima."""


def hypotension_grade(
    *, hypotension: bool, vasopressors: int, vasopressin: bool
) -> int:
    """CRS grade of the hypotension column (0 when none).

    Parameters
    ----------
    hypotension : bool
        Hypotension measured (SBP < 90 mmHg).
    vasopressors : int
        Distinct vasopressor agents given, vasopressin excluded.
    vasopressin : bool
        Whether vasopressin is given.
    """
    if vasopressors >= 2:
        return 4
    if vasopressors == 1 or vasopressin:
        return 3
    return 2 if hypotension else 0


def oxygen_grade(device: str | None) -> int:
    """CRS grade of the hypoxia column for an oxygen device (0 when none)."""
    if device is None:
        return 0
    if device not in OXYGEN_GRADES:
        allowed = ", ".join(OXYGEN_GRADES)
        raise DataError(f"unknown oxygen device {device!r}; allowed: {allowed}")
    return OXYGEN_GRADES[device]


def crs_grade(
    *,
    fever: bool,
    hypotension: bool = False,
    vasopressors: int = 0,
    vasopressin: bool = False,
    oxygen: str | None = None,
    fever_required: bool = True,
) -> int:
    """ASTCT CRS grade (0-4) from the findings at one instant.

    Parameters
    ----------
    fever : bool
        Temperature >= 38 °C.
    hypotension : bool
        Systolic BP below the hypotension threshold.
    vasopressors : int
        Distinct vasopressor agents given, vasopressin excluded.
    vasopressin : bool
        Whether vasopressin is given.
    oxygen : str or None
        Oxygen device (key of :data:`OXYGEN_GRADES`), ``None`` without oxygen.
    fever_required : bool
        ``False`` after tocilizumab or corticosteroid for CRS.

    Examples
    --------
    The consensus paper's example, 39.5 °C with one vasopressor and low-flow
    oxygen:

    >>> crs_grade(fever=True, vasopressors=1, oxygen="low_flow")
    3
    """
    if fever_required and not fever:
        return 0
    worst = max(
        hypotension_grade(
            hypotension=hypotension, vasopressors=vasopressors, vasopressin=vasopressin
        ),
        oxygen_grade(oxygen),
    )
    return max(worst, 1 if fever else 0)


def crs_timeline(
    record: PatientRecord,
    *,
    fever_window: dt.timedelta = FEVER_WINDOW,
    open_event_duration: dt.timedelta = dt.timedelta(0),
) -> CrsTimeline:
    """ASTCT CRS grade of a patient at every evaluation instant after infusion.

    Parameters
    ----------
    record : PatientRecord
        Temperature (Cel), systolic BP (mm[Hg]) and SpO2 (%) observations;
        ``vasopressor``, ``oxygen``, ``tocilizumab`` and ``corticosteroid``
        events.
    fever_window : datetime.timedelta
        How long after a fever CRS counts as present (default 24 h).
    open_event_duration : datetime.timedelta
        How long an event without ``end`` counts (default 0: its start only).

    Returns
    -------
    CrsTimeline
        Empty, with ``message``, when the record has no infusion.
    """
    if record.infusion_time is None:
        message = no_infusion_message(record, "CRS")
        return CrsTimeline("ASTCT CRS", (), REFERENCE, message=message, notes=NOTES)
    data = _CrsData.from_record(record)
    instants = evaluation_instants(
        record,
        ("temperature", "systolic_bp", "spo2"),
        ("vasopressor", "oxygen", *FEVER_MASKING_KINDS),
        open_event_duration,
    )
    points = tuple(
        _point_at(record, data, when, fever_window, open_event_duration)
        for when in instants
    )
    return CrsTimeline("ASTCT CRS", points, REFERENCE, notes=NOTES)


@dataclass(frozen=True)
class _CrsData:
    """A record's CRS inputs, indexed for look-up by instant."""

    fever_times: tuple[dt.datetime, ...]
    fever_values: tuple[float, ...]
    masking: Event | None
    sbp: dict[dt.datetime, float]
    spo2: dict[dt.datetime, float]
    vasopressors: tuple[Event, ...]
    oxygen: tuple[Event, ...]

    @classmethod
    def from_record(cls, record: PatientRecord) -> _CrsData:
        infusion = record.infusion_time
        fevers = [
            obs
            for obs in record.observations_of("temperature")
            if obs.time >= infusion and _search.compare(obs.value, FEVER_CELSIUS) >= 0
        ]
        masking = [
            e for e in record.events_of(*FEVER_MASKING_KINDS) if e.start >= infusion
        ]
        return cls(
            fever_times=tuple(obs.time for obs in fevers),
            fever_values=tuple(obs.value for obs in fevers),
            masking=masking[0] if masking else None,
            sbp=_lowest_by_time(record, "systolic_bp"),
            spo2=_lowest_by_time(record, "spo2"),
            vasopressors=record.events_of("vasopressor"),
            oxygen=record.events_of("oxygen"),
        )


def _lowest_by_time(record: PatientRecord, quantity: str) -> dict[dt.datetime, float]:
    lowest: dict[dt.datetime, float] = {}
    for obs in record.observations_of(quantity):
        lowest[obs.time] = min(lowest.get(obs.time, obs.value), obs.value)
    return lowest


def _point_at(
    record: PatientRecord,
    data: _CrsData,
    when: dt.datetime,
    fever_window: dt.timedelta,
    open_duration: dt.timedelta,
) -> GradePoint:
    # Fever, and whether fever is still required.
    reasons: list[str] = []
    fever = _fever_reason(data, when, fever_window)
    masked = _masked_reason(data, when)
    reasons += [text for text in (fever, masked) if text]

    # Hypotension and hypoxia, each with its own column grade.
    sbp = data.sbp.get(when)
    low_bp = sbp is not None and _search.compare(sbp, HYPOTENSION_SBP_MMHG) < 0
    agents, vasopressin, pressor_text = _vasopressors_at(data, when, open_duration)
    device, oxygen_text = _oxygen_at(data, when, open_duration)
    reasons += _findings(data, when, sbp if low_bp else None, pressor_text, oxygen_text)

    # Grade, and which column set it.
    hypo = hypotension_grade(
        hypotension=low_bp, vasopressors=len(agents), vasopressin=vasopressin
    )
    grade = crs_grade(
        fever=bool(fever),
        hypotension=low_bp,
        vasopressors=len(agents),
        vasopressin=vasopressin,
        oxygen=device,
        fever_required=not masked,
    )
    if grade == 0 and max(hypo, oxygen_grade(device)) > 0:
        reasons.append("hypotension/hypoxia without fever: not graded as CRS")
    driver = _driver(grade, hypo, oxygen_grade(device))
    return GradePoint(when, record.study_day(when), grade, driver, tuple(reasons))


def _fever_reason(data: _CrsData, when: dt.datetime, window: dt.timedelta) -> str:
    index = bisect.bisect_right(data.fever_times, when) - 1
    if index < 0 or data.fever_times[index] < when - window:
        return ""
    time, value = data.fever_times[index], data.fever_values[index]
    return f"fever {value:g} Cel at {time.isoformat()}"


def _masked_reason(data: _CrsData, when: dt.datetime) -> str:
    treated = data.masking
    if treated is None or treated.start > when:
        return ""
    if not data.fever_times or data.fever_times[0] > when:
        return ""
    return (
        f"fever not required after {treated.name or treated.kind} "
        f"at {treated.start.isoformat()}"
    )


def _findings(
    data: _CrsData,
    when: dt.datetime,
    low_sbp: float | None,
    pressor_text: str,
    oxygen_text: str,
) -> list[str]:
    found = []
    if low_sbp is not None:
        found.append(f"systolic BP {low_sbp:g} mm[Hg] < {HYPOTENSION_SBP_MMHG:g}")
    found += [text for text in (pressor_text, oxygen_text) if text]
    spo2 = data.spo2.get(when)
    low_spo2 = spo2 is not None and _search.compare(spo2, HYPOXIA_SPO2_PERCENT) < 0
    if low_spo2 and not oxygen_text:
        found.append(
            f"SpO2 {spo2:g} % with no oxygen support recorded: "
            "hypoxia of unknown support, not graded"
        )
    return found


def _vasopressors_at(
    data: _CrsData, when: dt.datetime, open_duration: dt.timedelta
) -> tuple[set[str], bool, str]:
    agents: set[str] = set()
    vasopressin = False
    for event in data.vasopressors:
        if not event_covers(event, when, open_duration):
            continue
        if _is_vasopressin(event):
            vasopressin = True
        else:
            agents.add(event.name.lower() or event.source_code or "unnamed vasopressor")
    names = sorted(agents) + (["vasopressin (not counted)"] if vasopressin else [])
    text = f"vasopressors: {', '.join(names)}" if names else ""
    return agents, vasopressin, text


def _is_vasopressin(event: Event) -> bool:
    if "vasopressin" in (event.detail.lower(), event.name.lower()):
        return True
    system, _, code = event.source_code.partition("|")
    row = _code_map().lookup(system, code)
    return row is not None and row.target == "vasopressor:vasopressin"


@functools.cache
def _code_map():
    """The code map in force (shipped table plus the site's own tables)."""
    from cartwin.io.codes import load_code_map

    return load_code_map()


def _oxygen_at(
    data: _CrsData, when: dt.datetime, open_duration: dt.timedelta
) -> tuple[str | None, str]:
    best: tuple[int, str, str] | None = None
    for event in data.oxygen:
        if event_covers(event, when, open_duration):
            device, note = _oxygen_device(event)
            candidate = (OXYGEN_GRADES[device], device, note)
            best = candidate if best is None or candidate[0] > best[0] else best
    if best is None:
        return None, ""
    _, device, note = best
    return device, f"oxygen: {device}{note}"


def _oxygen_device(event: Event) -> tuple[str, str]:
    device = event.detail.strip().lower()
    note = ""
    if not device:
        device, note = "low_flow", " (device not given: graded as low flow)"
    if device not in OXYGEN_GRADES:
        allowed = ", ".join(OXYGEN_GRADES)
        raise DataError(
            f"oxygen event {event.source_id or event.start.isoformat()} has unknown "
            f"device detail {event.detail!r}; allowed: {allowed}"
        )
    flow = event.dose if event.dose_unit == "L/min" else None
    high_flow = flow is not None and flow > LOW_FLOW_MAX_L_PER_MIN
    if OXYGEN_GRADES[device] == 2 and high_flow:
        device, note = "high_flow", f" ({flow:g} L/min > 6 L/min: graded as high flow)"
    return device, note


def _driver(grade: int, hypo: int, hypoxia: int) -> str:
    if grade == 0:
        return "none"
    columns = (("hypotension", hypo), ("hypoxia", hypoxia))
    parts = [name for name, column in columns if column == grade]
    return "+".join(parts) or "fever"
