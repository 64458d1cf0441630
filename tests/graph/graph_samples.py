"""Synthetic patients simulated from the standard LBCL graph, for graph tests.

A patient gets a ZUMA-1-like course (flu/cy on days -5 to -3, 1.6e8 CAR T
cells at day 0) and a realistic sampling schedule: CAR T by flow (LLOQ
1 cell/uL) and qPCR (LLOQ 10 copies/ug), daily labs in the first two weeks,
then weekly, imaging (SPD) at baseline and days 28 and 90. Values are the
graph's predictions with each observable's residual error drawn on top, and
censored below the limits (value = the limit, never zero).
"""

from __future__ import annotations

import datetime as dt

import numpy as np

from cartwin.graph.graph import ModelGraph
from cartwin.graph.inputs import schedule_from_record
from cartwin.record.model import Event, Observation, PatientFacts, PatientRecord

#: Infusion instant of every synthetic patient (UTC).
T0 = dt.datetime(2024, 3, 4, 10, 0, tzinfo=dt.UTC)

#: Sampling days per quantity.
SCHEDULE = {
    "cart_flow": (1, 3, 5, 7, 9, 11, 14, 21, 28, 42, 60, 90),
    "cart_qpcr": (7, 14, 28, 90),
    "alc": (-6, -4, -2, 0, 2, 4, 6, 8, 10, 14, 21, 28, 60, 90),
    "ldh": (-6, -1, 1, 3, 5, 7, 10, 14, 21, 28, 60, 90),
    "il6": (-1, 0.5, 1, 2, 3, 4, 5, 6, 7, 9, 11, 14),
    "crp": (-6, -1, 0.5, 1, 2, 3, 4, 5, 6, 7, 9, 11, 14, 21, 28),
    "spd": (-7, 28, 90),
}

#: Every sampling day, sorted (also a shared simulation grid for tests).
SAMPLE_DAYS = np.unique(
    np.concatenate([np.asarray(d, float) for d in SCHEDULE.values()])
)

#: Lower limits of quantification.
LLOQ = {"cart_flow": 1.0, "cart_qpcr": 10.0}


def at(days: float) -> dt.datetime:
    """Instant ``days`` after the infusion."""
    return T0 + dt.timedelta(days=float(days))


def course_events(dose_cells: float = 1.6e8) -> tuple[Event, ...]:
    """Lymphodepletion (flu 30 + cy 500 mg/m2, days -5..-3) and the infusion."""
    events = [
        Event(
            "infusion",
            at(0),
            at(1 / 48),
            name="axicabtagene ciloleucel",
            dose=dose_cells,
            dose_unit="{cells}",
        )
    ]
    for day in (-5, -4, -3):
        events.append(
            Event(
                "lymphodepletion",
                at(day),
                at(day + 0.02),
                name="fludarabine",
                dose=30.0,
                dose_unit="mg/m2",
            )
        )
        events.append(
            Event(
                "lymphodepletion",
                at(day + 0.03),
                at(day + 0.06),
                name="cyclophosphamide",
                dose=500.0,
                dose_unit="mg/m2",
            )
        )
    return tuple(events)


def synthetic_patient(
    graph: ModelGraph, vector: np.ndarray, rng: np.random.Generator, name: str = "syn"
) -> PatientRecord:
    """A record simulated from parameter vector ``vector`` with residual noise."""
    bare = PatientRecord(PatientFacts(name, disease="LBCL"), (), course_events())
    schedule = schedule_from_record(bare)
    days = SAMPLE_DAYS
    course = graph.simulate(schedule, days, vector)
    observations = []
    for quantity, sampled in SCHEDULE.items():
        sigma = graph.observables[quantity][1].sigma
        for day in sampled:
            latent = course.observables[quantity][np.searchsorted(days, day)]
            value = float(latent * np.exp(sigma * rng.standard_normal()))
            limit = LLOQ.get(quantity, 1.0 if quantity == "spd" else 0.0)
            below = value < limit
            observations.append(
                Observation(
                    quantity,
                    at(day),
                    limit if below else value,
                    graph.observables[quantity][1].unit,
                    censored="below" if below else None,
                )
            )
    return bare.with_data(observations=observations)
