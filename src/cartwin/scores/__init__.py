"""Clinical scores and grades: CAR-HEMATOTOX, EASIX family, ASTCT CRS and ICANS.

Each score has pure functions on plain numbers in canonical units (testable
apart from any record) and a record-level function that finds its inputs,
says which are missing and where it looked, and never guesses.
"""

from __future__ import annotations

from cartwin.scores._result import ScoreInput, ScoreResult
from cartwin.scores._timeline import GradePoint, GradeTimeline
from cartwin.scores.baseline import baseline_scores
from cartwin.scores.crs import CrsTimeline, crs_grade, crs_timeline
from cartwin.scores.easix import (
    easix,
    easix_from_record,
    easix_log2,
    korell_category,
    m_easix,
    simplified_easix,
)
from cartwin.scores.hematotox import (
    HematotoxPoints,
    hematotox_category,
    hematotox_from_record,
    hematotox_points,
)
from cartwin.scores.icans import IcansTimeline, ice_grade, icans_grade, icans_timeline

__all__ = [
    "CrsTimeline",
    "GradePoint",
    "GradeTimeline",
    "HematotoxPoints",
    "IcansTimeline",
    "ScoreInput",
    "ScoreResult",
    "baseline_scores",
    "crs_grade",
    "crs_timeline",
    "easix",
    "easix_from_record",
    "easix_log2",
    "hematotox_category",
    "hematotox_from_record",
    "hematotox_points",
    "ice_grade",
    "icans_grade",
    "icans_timeline",
    "korell_category",
    "m_easix",
    "simplified_easix",
]
