"""Patient data model: observations, events, facts, units and pseudonyms."""

from __future__ import annotations

from cartwin.record.model import (
    EVENT_KINDS,
    Event,
    Observation,
    PatientFacts,
    PatientRecord,
    Series,
)
from cartwin.record.units import canonical_unit, quantity_specs, to_canonical

__all__ = [
    "EVENT_KINDS",
    "Event",
    "Observation",
    "PatientFacts",
    "PatientRecord",
    "Series",
    "canonical_unit",
    "quantity_specs",
    "to_canonical",
]
