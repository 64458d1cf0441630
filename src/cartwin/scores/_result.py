"""Result types shared by every clinical score: the value, its inputs, its gaps."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass


@dataclass(frozen=True)
class ScoreInput:
    """One input value a score used.

    Attributes
    ----------
    name : str
        Quantity key from ``quantities.csv`` (``"platelets"``, ``"crp"``, ...).
    value : float or None
        Value in ``unit`` (the canonical unit of the quantity). For a censored
        value this is the limit of quantification.
    unit : str
        Canonical UCUM unit of ``value``.
    time : datetime.datetime or None
        Instant of measurement, timezone-aware UTC.
    study_day : int or None
        Study day of ``time``; ``None`` when the record has no infusion.
    source_id : str
        Identifier of the source resource, for provenance.
    censored : str or None
        ``"below"`` or ``"above"`` for a value outside the limits of
        quantification, ``None`` for an exact value.
    """

    name: str
    value: float | None
    unit: str
    time: dt.datetime | None
    study_day: int | None
    source_id: str = ""
    censored: str | None = None

    def to_dict(self) -> dict:
        """Return a JSON-ready mapping (instants as ISO 8601 strings)."""
        return {
            "name": self.name,
            "value": self.value,
            "unit": self.unit,
            "time": None if self.time is None else self.time.isoformat(),
            "study_day": self.study_day,
            "source_id": self.source_id,
            "censored": self.censored,
        }


@dataclass(frozen=True)
class ScoreResult:
    """A clinical score computed from a patient record, with its provenance.

    Attributes
    ----------
    name : str
        ``"CAR-HEMATOTOX"``, ``"EASIX"``, ``"m-EASIX"`` or ``"simplified EASIX"``.
    value : float or None
        Score value; ``None`` when an input is missing or censored so that the
        value cannot be known. A score never guesses a missing input.
    category : str or None
        Risk group (``"low"``/``"high"``) where a published cut-off applies
        and the value (or its censoring bound) decides it.
    inputs : tuple of ScoreInput
        The values used, one per input found.
    missing : tuple of str
        Names of the inputs that were not found in the window.
    window : tuple of (int, int) or None
        Study-day window searched, inclusive; ``None`` without a study day.
    reference : str
        Short citation with DOI.
    message : str
        Why the value is missing or bounded, naming the input and the window.
    timepoint : str
        Which time point this is (``"pre-lymphodepletion"``, ``"day 0"``, ...).
    """

    name: str
    value: float | None
    category: str | None
    inputs: tuple[ScoreInput, ...]
    missing: tuple[str, ...]
    window: tuple[int, int] | None
    reference: str
    message: str = ""
    timepoint: str = ""

    def to_dict(self) -> dict:
        """Return a JSON-ready mapping (instants as ISO 8601 strings)."""
        return {
            "name": self.name,
            "value": self.value,
            "category": self.category,
            "inputs": [item.to_dict() for item in self.inputs],
            "missing": list(self.missing),
            "window": None if self.window is None else list(self.window),
            "reference": self.reference,
            "message": self.message,
            "timepoint": self.timepoint,
        }
