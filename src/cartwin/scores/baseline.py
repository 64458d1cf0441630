"""The set of scores a patient report shows before and around infusion."""

from __future__ import annotations

from typing import Callable

from cartwin.errors import DataError
from cartwin.record.model import PatientRecord
from cartwin.scores import _search
from cartwin.scores._result import ScoreResult
from cartwin.scores.easix import VARIANTS, easix_from_record
from cartwin.scores.hematotox import hematotox_from_record

#: Study days after infusion at which m-EASIX is also shown (Pennisi 2021).
M_EASIX_DAYS = (0, 3)


def baseline_scores(record: PatientRecord) -> list[ScoreResult]:
    """Scores for the report: pre-lymphodepletion, then m-EASIX on day 0 and +3.

    Always returns CAR-HEMATOTOX, EASIX and m-EASIX at the pre-lymphodepletion
    time point (with ``value=None`` and a message when inputs are missing).
    m-EASIX on study day 0 and day +3 is added only when the record has an
    infusion and at least one m-EASIX input (LDH, CRP, platelets) on that day,
    so a report does not list empty later time points.

    Parameters
    ----------
    record : PatientRecord
        The patient.

    Returns
    -------
    list of ScoreResult
        In the order above; see :func:`hematotox_from_record` and
        :func:`easix_from_record` for the window rules.
    """
    results = [
        _guarded("CAR-HEMATOTOX", lambda: hematotox_from_record(record)),
        _guarded("EASIX", lambda: easix_from_record(record, "EASIX")),
        _guarded("m-EASIX", lambda: easix_from_record(record, "m-EASIX")),
    ]
    if record.infusion_time is None:
        return results
    for day in M_EASIX_DAYS:
        window = _search.study_day_window(record, day, day)
        found, _ = _search.latest_inputs(record, VARIANTS["m-EASIX"], window)
        if found:
            results.append(_guarded(
                "m-EASIX",
                lambda d=day: easix_from_record(record, "m-EASIX", day_window=(d, d)),
                timepoint=f"day {day:+d}" if day else "day 0",
            ))
    return results


def _guarded(
    name: str, compute: Callable[[], ScoreResult], *, timepoint: str = ""
) -> ScoreResult:
    """Run one score; an input it cannot use gives a result that says why.

    One implausible input (platelets of 0, say) must not take the other
    scores, or the whole twin, down with it.
    """
    try:
        return compute()
    except DataError as exc:
        return ScoreResult(
            name=name, value=None, category=None, inputs=(), missing=(),
            window=None, reference="", message=f"not computed: {exc}",
            timepoint=timepoint,
        )
