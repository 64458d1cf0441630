"""Exogenous inputs of a model graph, from a patient's events or a scenario.

An exogenous input is a coupling variable that no model of the graph writes
(``spec.py``): cells infused, drug exposures, product composition. Each has an
:class:`InputChannel` that says how a list of :class:`Pulse` (start, end,
amount) becomes a value at time ``t`` (days since infusion):

``rate``
    ``amount / (end - start)`` while ``start <= t < end`` (an infusion).
``exposure``
    ``amount * exp(-ln2 (t - start) / half_life)`` for ``t >= start``: a bolus
    whose effect decays first-order (a one-compartment drug exposure, in
    units of a reference dose).
``constant``
    The channel's constant value (product composition).

Channels (:data:`CHANNELS`; the names are the stable coupling names that
models read):

=========================  ==========  =========  ==============================
name                       unit        kind       one unit is
=========================  ==========  =========  ==============================
cart_infusion_rate         {cells}/d   rate       one CAR T cell per day
ld_exposure                1           exposure   one day of fludarabine 30 mg/m2
                                                  + cyclophosphamide 500 mg/m2
bridging_exposure          1           exposure   one bridging agent given
steroid_exposure           1           exposure   10 mg dexamethasone equivalent
toci_exposure              1           exposure   one tocilizumab 8 mg/kg dose
product_memory_fraction    1           constant   memory share of the product
=========================  ==========  =========  ==============================

Half-lives of the exposures are effect half-lives, assumptions stated in
:data:`CHANNELS`. Corticosteroid doses are converted to dexamethasone
equivalents with the usual equivalence table (dexamethasone 0.75 mg =
prednisone 5 mg = methylprednisolone 4 mg = hydrocortisone 20 mg) [1]_. Body
surface area is Mosteller's formula [2]_.

:func:`schedule_from_record` builds an :class:`InputSchedule`; a
:class:`Scenario` changes it (another dose, tocilizumab at another time,
another bridging regimen) without touching the patient's twin.

References
----------
.. [1] Liu D, Ahmet A, Ward L, et al. A practical guide to the monitoring and
   management of the complications of systemic corticosteroid therapy.
   Allergy Asthma Clin Immunol 2013;9(1):30. doi:10.1186/1710-1492-9-30
.. [2] Mosteller RD. Simplified calculation of body-surface area. N Engl J
   Med 1987;317(17):1098. doi:10.1056/NEJM198710223171717
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from cartwin.errors import DataError, MissingInputError, ModelSpecificationError
from cartwin.record.model import Event, PatientRecord

#: Kinds of channel and how pulses become values.
CHANNEL_KINDS = ("rate", "exposure", "constant")

#: Days before the first bridging/lymphodepletion event that a graph starts.
LEAD_IN_DAYS = 7.0

#: Earliest start of a graph simulation, days since infusion.
EARLIEST_START_DAY = -90.0

#: Default infusion duration when an infusion event has no end, days (30 min).
DEFAULT_INFUSION_DAYS = 30.0 / 1440.0

#: Time far after any simulation; padding pulses start here.
FAR_FUTURE_DAY = 1.0e6


@dataclass(frozen=True)
class InputChannel:
    """How one exogenous coupling is computed from pulses.

    Attributes
    ----------
    name : str
        Coupling name read by models.
    unit : str
        UCUM unit of the value.
    kind : str
        One of :data:`CHANNEL_KINDS`.
    half_life_days : float
        Effect half-life of an ``exposure`` channel, days (> 0).
    default : float
        Value of a ``constant`` channel when the record has none.
    description : str
        What one unit is and where the numbers come from.
    """

    name: str
    unit: str
    kind: str
    half_life_days: float = 1.0
    default: float = 0.0
    description: str = ""

    def __post_init__(self) -> None:
        if self.kind not in CHANNEL_KINDS:
            raise ModelSpecificationError(
                f"input channel {self.name}: kind {self.kind!r} not in {CHANNEL_KINDS}"
            )
        if not self.half_life_days > 0:
            raise ModelSpecificationError(
                f"input channel {self.name}: half_life_days must be > 0, "
                f"got {self.half_life_days}"
            )


#: The exogenous channels cartwin knows, by coupling name.
CHANNELS: dict[str, InputChannel] = {
    c.name: c
    for c in (
        InputChannel(
            "cart_infusion_rate",
            "{cells}/d",
            "rate",
            description="CAR T cells infused per day over the "
            "infusion interval (30 min when no end is recorded)",
        ),
        InputChannel(
            "ld_exposure",
            "1",
            "exposure",
            1.0,
            description="1 = one day of fludarabine 30 mg/m2 + "
            "cyclophosphamide 500 mg/m2 (each half); effect half-life "
            "1 d (assumption; fludarabine metabolite half-life ~20 h)",
        ),
        InputChannel(
            "bridging_exposure",
            "1",
            "exposure",
            3.0,
            description="1 per bridging agent given; effect half-life 3 d (assumption)",
        ),
        InputChannel(
            "steroid_exposure",
            "1",
            "exposure",
            1.5,
            description="1 = 10 mg dexamethasone equivalent "
            "(doi:10.1186/1710-1492-9-30); effect half-life 1.5 d "
            "(assumption: dexamethasone biological half-life 36-54 h)",
        ),
        InputChannel(
            "toci_exposure",
            "1",
            "exposure",
            6.0,
            description="1 = one tocilizumab 8 mg/kg dose; half-life "
            "6 d (assumption; label: up to 11-13 d at 8 mg/kg, shorter "
            "at high IL-6 receptor load)",
        ),
        InputChannel(
            "product_memory_fraction",
            "1",
            "constant",
            default=0.3,
            description="memory share of the infused CAR T cells; 0.3 "
            "when the product's composition is not recorded "
            "(assumption)",
        ),
    )
}


def register_channel(channel: InputChannel) -> None:
    """Add an exogenous channel (for a new model's input) to :data:`CHANNELS`.

    Raises
    ------
    ModelSpecificationError
        When a different channel of the same name exists.
    """
    existing = CHANNELS.get(channel.name)
    if existing is not None and existing != channel:
        raise ModelSpecificationError(
            f"input channel {channel.name!r} already defined as {existing}"
        )
    CHANNELS[channel.name] = channel


#: Dexamethasone-equivalent mg per mg of each corticosteroid (Liu 2013).
DEXAMETHASONE_EQUIVALENT = {
    "dexamethasone": 1.0,
    "methylprednisolone": 0.75 / 4.0,
    "prednisolone": 0.75 / 5.0,
    "prednisone": 0.75 / 5.0,
    "hydrocortisone": 0.75 / 20.0,
}

#: Reference lymphodepletion doses (mg/m2/day) and their weight in one unit.
LD_REFERENCE = {
    "fludarabine": (30.0, 0.5),
    "cyclophosphamide": (500.0, 0.5),
    "bendamustine": (90.0, 1.0),
}

#: Tocilizumab reference dose, mg/kg, and the body weight assumed without one.
TOCI_MG_PER_KG, ASSUMED_WEIGHT_KG = 8.0, 80.0

#: Body surface area assumed when height or weight is missing, m2.
ASSUMED_BSA_M2 = 1.9


@dataclass(frozen=True)
class Pulse:
    """One administration: ``amount`` between ``start_day`` and ``end_day``.

    For ``rate`` channels ``amount`` is the total (cells) spread evenly over
    the interval; for ``exposure`` channels it is the dose in reference units,
    given at ``start_day``; for ``constant`` channels the value.
    """

    start_day: float
    end_day: float
    amount: float
    label: str = ""

    def __post_init__(self) -> None:
        values = (self.start_day, self.end_day, self.amount)
        if not all(math.isfinite(v) for v in values) or self.amount < 0:
            raise DataError(
                f"Pulse {self.label!r}: start, end and amount must be finite and "
                f"amount >= 0; got {values}"
            )
        if self.end_day < self.start_day:
            raise DataError(
                f"Pulse {self.label!r}: end_day {self.end_day} before start_day "
                f"{self.start_day}"
            )


@dataclass(frozen=True)
class InputSchedule:
    """All exogenous inputs of one patient (or one scenario of that patient).

    Attributes
    ----------
    pulses : dict[str, tuple[Pulse, ...]]
        Pulses per channel name (``rate`` and ``exposure`` channels).
    constants : dict[str, float]
        Values of ``constant`` channels; missing ones take the default.
    t_start : float
        Start of the simulation, days since infusion (<= 0).
    covariates : dict[str, float]
        Patient facts known before day 0 (``body_weight_kg``,
        ``body_height_cm``, ``bsa_m2``) passed to ``initial_state``.
    notes : tuple of str
        Assumptions made while reading the record (missing units, defaults).
    """

    pulses: Mapping[str, tuple[Pulse, ...]] = field(default_factory=dict)
    constants: Mapping[str, float] = field(default_factory=dict)
    t_start: float = 0.0
    covariates: Mapping[str, float] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        unknown = sorted((set(self.pulses) | set(self.constants)) - set(CHANNELS))
        if unknown:
            raise ModelSpecificationError(
                f"InputSchedule names unknown channels {unknown}; known: "
                f"{sorted(CHANNELS)}"
            )
        if not self.t_start <= 0.0:
            raise DataError(f"InputSchedule.t_start must be <= 0, got {self.t_start}")

    def of(self, name: str) -> tuple[Pulse, ...]:
        """Pulses of channel ``name`` (empty when none)."""
        return tuple(self.pulses.get(name, ()))

    def constant(self, name: str) -> float:
        """Value of constant channel ``name`` (its default when not set)."""
        return float(self.constants.get(name, CHANNELS[name].default))

    def value(self, name: str, t_days: Any) -> np.ndarray:
        """Value of channel ``name`` at ``t_days`` (NumPy; for checks and plots)."""
        t = np.asarray(t_days, dtype=float)
        channel = CHANNELS[name]
        if channel.kind == "constant":
            return np.full_like(t, self.constant(name))
        total = np.zeros_like(t)
        for pulse in self.of(name):
            total = total + _pulse_value(channel, pulse, t)
        return total

    def with_pulses(self, name: str, pulses: tuple[Pulse, ...]) -> InputSchedule:
        """A copy with channel ``name``'s pulses replaced."""
        if name not in CHANNELS:
            raise ModelSpecificationError(f"unknown input channel {name!r}")
        merged = {**self.pulses, name: tuple(pulses)}
        return replace(self, pulses=merged, t_start=min(self.t_start, _first(pulses)))

    def with_constant(self, name: str, value: float) -> InputSchedule:
        """A copy with constant channel ``name`` set to ``value``."""
        if name not in CHANNELS or CHANNELS[name].kind != "constant":
            raise ModelSpecificationError(f"{name!r} is not a constant input channel")
        return replace(self, constants={**self.constants, name: float(value)})

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (pulses as lists of dicts)."""
        return {
            "t_start": self.t_start,
            "pulses": {
                name: [vars(p).copy() for p in pulses]
                for name, pulses in sorted(self.pulses.items())
            },
            "constants": dict(self.constants),
            "covariates": dict(self.covariates),
            "notes": list(self.notes),
        }


def _first(pulses: tuple[Pulse, ...]) -> float:
    # a scenario that adds an earlier pulse moves the start back
    starts = [p.start_day - LEAD_IN_DAYS for p in pulses if p.start_day < 0]
    return max(EARLIEST_START_DAY, min(starts)) if starts else 0.0


def _pulse_value(channel: InputChannel, pulse: Pulse, t: np.ndarray) -> np.ndarray:
    if channel.kind == "rate":
        width = max(pulse.end_day - pulse.start_day, 1e-9)
        inside = (t >= pulse.start_day) & (t < pulse.start_day + width)
        return np.where(inside, pulse.amount / width, 0.0)
    rate = math.log(2.0) / channel.half_life_days
    since = np.maximum(t - pulse.start_day, 0.0)
    return np.where(t >= pulse.start_day, pulse.amount * np.exp(-rate * since), 0.0)


# -- from a patient record ----------------------------------------------------


def schedule_from_record(record: PatientRecord) -> InputSchedule:
    """Exogenous inputs of ``record``: infusion, lymphodepletion, bridging, drugs.

    Parameters
    ----------
    record : PatientRecord
        Needs an infusion event with a dose in ``{cells}``, ``10*6.{cells}``
        or ``{cells}/kg`` (with a body weight observation).

    Returns
    -------
    InputSchedule
        With ``t_start`` = min(0, first bridging or lymphodepletion day) -
        :data:`LEAD_IN_DAYS`, not before :data:`EARLIEST_START_DAY`, and notes
        for every assumption made (missing units, assumed weight or BSA).

    Raises
    ------
    MissingInputError
        When the record has no infusion or its dose cannot be read.
    """
    if record.infusion is None:
        raise MissingInputError(
            f"patient {record.facts.pseudonym}: no infusion event; a graph twin "
            "needs the CAR T dose and time"
        )
    notes: list[str] = []
    covariates = _body_covariates(record, notes)
    pulses = {
        "cart_infusion_rate": _infusions(record, covariates, notes),
        "ld_exposure": _lymphodepletion(record, covariates, notes),
        "bridging_exposure": _bridging(record, notes),
        "steroid_exposure": _steroids(record, covariates, notes),
        "toci_exposure": _tocilizumab(record, covariates, notes),
    }
    early = [
        p.start_day for key in ("ld_exposure", "bridging_exposure") for p in pulses[key]
    ]
    t_start = max(EARLIEST_START_DAY, min([0.0, *early]) - LEAD_IN_DAYS)
    if not pulses["ld_exposure"]:
        notes.append("no lymphodepletion event in the record: none assumed")
    return InputSchedule(
        pulses=pulses, t_start=t_start, covariates=covariates, notes=tuple(notes)
    )


def _days(record: PatientRecord, event: Event) -> tuple[float, float]:
    start = record.t_days(event.start)
    end = start if event.end is None else record.t_days(event.end)
    return start, max(end, start)


def _body_covariates(record: PatientRecord, notes: list[str]) -> dict[str, float]:
    # last weight and height at or before infusion, then Mosteller BSA
    values = {}
    for quantity, key in (
        ("body_weight", "body_weight_kg"),
        ("body_height", "body_height_cm"),
    ):
        series = record.series(quantity)
        before = series.values[series.t_days <= 0.5]
        if before.size:
            values[key] = float(before[-1])
    if {"body_weight_kg", "body_height_cm"} <= set(values):
        product = values["body_weight_kg"] * values["body_height_cm"]
        values["bsa_m2"] = math.sqrt(product / 3600.0)
    else:
        values["bsa_m2"] = ASSUMED_BSA_M2
        notes.append(f"height or weight missing: BSA {ASSUMED_BSA_M2} m2 assumed")
    return values


def _infusions(record, covariates, notes) -> tuple[Pulse, ...]:
    pulses = []
    for event in record.events_of("infusion"):
        if event.detail == "requested":
            continue
        start, end = _days(record, event)
        if end <= start:
            end = start + DEFAULT_INFUSION_DAYS
        cells = _cells(record, event, covariates)
        pulses.append(Pulse(start, end, cells, event.name or "infusion"))
    return tuple(pulses)


def _cells(record: PatientRecord, event: Event, covariates) -> float:
    unit = event.dose_unit.replace(" ", "")
    factors = {
        "{cells}": 1.0,
        "10*6.{cells}": 1e6,
        "10*6{cells}": 1e6,
        "10*8.{cells}": 1e8,
        "10*8{cells}": 1e8,
    }
    if event.dose is None or not event.dose > 0:
        raise MissingInputError(
            f"patient {record.facts.pseudonym}: infusion event {event.source_id!r} "
            f"has no positive dose (dose={event.dose!r})"
        )
    if unit in factors:
        return float(event.dose) * factors[unit]
    if unit == "{cells}/kg" and "body_weight_kg" in covariates:
        return float(event.dose) * covariates["body_weight_kg"]
    raise MissingInputError(
        f"patient {record.facts.pseudonym}: infusion event {event.source_id!r} "
        f"dose unit {event.dose_unit!r} cannot be read as cells (allowed: "
        f"{sorted(factors)} or {{cells}}/kg with a body weight)"
    )


def _per_m2(event: Event, covariates, notes) -> float | None:
    # dose in mg/m2 from mg/m2, mg or mg/kg
    if event.dose is None:
        return None
    unit = event.dose_unit.replace(" ", "")
    if unit == "mg/m2":
        return float(event.dose)
    if unit == "mg":
        return float(event.dose) / covariates["bsa_m2"]
    if unit == "mg/kg" and "body_weight_kg" in covariates:
        return float(event.dose) * covariates["body_weight_kg"] / covariates["bsa_m2"]
    notes.append(f"{event.name}: dose unit {event.dose_unit!r} not readable; skipped")
    return None


def _lymphodepletion(record, covariates, notes) -> tuple[Pulse, ...]:
    pulses = []
    for event in record.events_of("lymphodepletion"):
        start, end = _days(record, event)
        drug = event.name.lower()
        match = next((k for k in LD_REFERENCE if k in drug), None)
        dose = _per_m2(event, covariates, notes)
        if match is None or dose is None:
            notes.append(
                f"lymphodepletion {event.name!r} on day {start:.1f}: unknown drug "
                "or dose; counted as half a standard day"
            )
            pulses.append(Pulse(start, end, 0.5, event.name))
            continue
        reference, weight = LD_REFERENCE[match]
        pulses.append(Pulse(start, end, weight * dose / reference, event.name))
    return tuple(pulses)


def _bridging(record, notes) -> tuple[Pulse, ...]:
    pulses = []
    for event in record.events_of("bridging"):
        start, end = _days(record, event)
        pulses.append(Pulse(start, end, 1.0, event.name or "bridging"))
    if pulses:
        notes.append(f"bridging: {len(pulses)} agent administration(s), 1 unit each")
    return tuple(pulses)


def _steroids(record, covariates, notes) -> tuple[Pulse, ...]:
    pulses = []
    for event in record.events_of("corticosteroid"):
        start, end = _days(record, event)
        drug = event.name.lower()
        match = next((k for k in DEXAMETHASONE_EQUIVALENT if k in drug), None)
        mg = _milligrams(event, covariates)
        if match is None or mg is None:
            notes.append(
                f"corticosteroid {event.name!r} on day {start:.1f}: unknown drug or "
                "dose; 10 mg dexamethasone assumed"
            )
            pulses.append(Pulse(start, end, 1.0, event.name))
            continue
        pulses.append(
            Pulse(start, end, mg * DEXAMETHASONE_EQUIVALENT[match] / 10.0, event.name)
        )
    return tuple(pulses)


def _tocilizumab(record, covariates, notes) -> tuple[Pulse, ...]:
    pulses = []
    weight = covariates.get("body_weight_kg")
    for event in record.events_of("tocilizumab"):
        start, end = _days(record, event)
        unit = event.dose_unit.replace(" ", "")
        if event.dose is not None and unit == "mg/kg":
            units = float(event.dose) / TOCI_MG_PER_KG
        elif event.dose is not None and unit == "mg":
            if weight is None:
                notes.append(f"tocilizumab: no weight, {ASSUMED_WEIGHT_KG} kg assumed")
            units = float(event.dose) / (TOCI_MG_PER_KG * (weight or ASSUMED_WEIGHT_KG))
        else:
            notes.append(
                f"tocilizumab on day {start:.1f}: dose unreadable, 8 mg/kg assumed"
            )
            units = 1.0
        pulses.append(Pulse(start, end, units, event.name or "tocilizumab"))
    return tuple(pulses)


def _milligrams(event: Event, covariates) -> float | None:
    unit = event.dose_unit.replace(" ", "")
    if event.dose is None:
        return None
    if unit == "mg":
        return float(event.dose)
    if unit == "mg/kg" and "body_weight_kg" in covariates:
        return float(event.dose) * covariates["body_weight_kg"]
    return None


def typical_schedule(
    dose_cells: float = 1.6e8,
    *,
    ld_days: tuple[float, ...] = (-5.0, -4.0, -3.0),
    bridging_days: tuple[float, ...] = (),
    toci_days: tuple[float, ...] = (),
    steroid_days: tuple[float, ...] = (),
    memory_fraction: float | None = None,
) -> InputSchedule:
    """A protocol schedule for virtual patients (no record needed).

    Defaults follow ZUMA-1 (clinical-facts §8): axi-cel 2e6 cells/kg for an
    80 kg adult (1.6e8 cells) over 30 min at day 0; fludarabine 30 mg/m2 and
    cyclophosphamide 500 mg/m2 on days -5, -4, -3 (one standard unit a day);
    no bridging (ZUMA-1 did not allow it), no tocilizumab, no steroids.
    ``toci_days`` give one 8 mg/kg dose each; ``steroid_days`` 10 mg
    dexamethasone each; ``bridging_days`` one agent each.
    """
    hour = 1.0 / 24.0
    pulses = {
        "cart_infusion_rate": (
            Pulse(0.0, DEFAULT_INFUSION_DAYS, dose_cells, "infusion"),
        ),
        "ld_exposure": tuple(Pulse(d, d + hour, 1.0, "flu/cy") for d in ld_days),
        "bridging_exposure": tuple(
            Pulse(d, d + hour, 1.0, "bridging") for d in bridging_days
        ),
        "toci_exposure": tuple(
            Pulse(d, d + hour, 1.0, "tocilizumab") for d in toci_days
        ),
        "steroid_exposure": tuple(
            Pulse(d, d + hour, 1.0, "dexamethasone") for d in steroid_days
        ),
    }
    early = [d for d in (*ld_days, *bridging_days) if d < 0]
    t_start = max(EARLIEST_START_DAY, min([0.0, *early]) - LEAD_IN_DAYS)
    constants = (
        {}
        if memory_fraction is None
        else {"product_memory_fraction": float(memory_fraction)}
    )
    return InputSchedule(
        pulses=pulses,
        constants=constants,
        t_start=t_start,
        covariates={"body_weight_kg": ASSUMED_WEIGHT_KG, "bsa_m2": ASSUMED_BSA_M2},
        notes=("typical protocol schedule (ZUMA-1-like), not a patient's record",),
    )


# -- scenarios ----------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """A change of a twin's exogenous inputs ("what if").

    Attributes
    ----------
    name : str
        Short label shown side by side with the other scenarios.
    description : str
        One sentence for reports.
    infusion_cells : float or None
        Total CAR T dose; the recorded infusion pulses are scaled to it.
    remove : tuple of (str, float or None)
        Channels to clear: ``(channel, after_day)`` removes pulses starting at
        or after ``after_day`` (all when None).
    add : tuple of (str, Pulse)
        Pulses to add per channel.
    constants : tuple of (str, float)
        Constant channels to set (e.g. ``product_memory_fraction``).
    """

    name: str
    description: str = ""
    infusion_cells: float | None = None
    remove: tuple[tuple[str, float | None], ...] = ()
    add: tuple[tuple[str, Pulse], ...] = ()
    constants: tuple[tuple[str, float], ...] = ()

    def apply(self, schedule: InputSchedule) -> InputSchedule:
        """The schedule under this scenario (the original is unchanged)."""
        result = schedule
        if self.infusion_cells is not None:
            result = _scale_infusion(result, self.infusion_cells)
        for name, after in self.remove:
            kept = tuple(
                p for p in result.of(name) if after is not None and p.start_day < after
            )
            result = result.with_pulses(name, kept)
        for name, pulse in self.add:
            result = result.with_pulses(name, (*result.of(name), pulse))
        for name, value in self.constants:
            result = result.with_constant(name, value)
        return result

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description."""
        return {
            "name": self.name,
            "description": self.description,
            "infusion_cells": self.infusion_cells,
            "remove": [list(r) for r in self.remove],
            "add": [{"channel": n, **vars(p)} for n, p in self.add],
            "constants": dict(self.constants),
        }


def _scale_infusion(schedule: InputSchedule, cells: float) -> InputSchedule:
    pulses = schedule.of("cart_infusion_rate")
    total = sum(p.amount for p in pulses)
    if not pulses or total <= 0 or not cells > 0:
        raise ModelSpecificationError(
            f"cannot set the infusion dose to {cells}: the schedule has "
            f"{len(pulses)} infusion pulse(s) totalling {total} cells"
        )
    scaled = tuple(replace(p, amount=p.amount * cells / total) for p in pulses)
    return schedule.with_pulses("cart_infusion_rate", scaled)


def dose_scenario(cells: float, name: str | None = None) -> Scenario:
    """Another CAR T dose (total cells), same timing."""
    return Scenario(
        name or f"dose {cells:.3g} cells",
        f"CAR T dose {cells:.3g} cells instead of the recorded dose",
        infusion_cells=cells,
    )


def tocilizumab_scenario(
    day: float | None, doses: float = 1.0, name: str | None = None
) -> Scenario:
    """Tocilizumab at ``day`` instead of the recorded doses (None: never)."""
    add = (
        ()
        if day is None
        else (("toci_exposure", Pulse(day, day + 1.0 / 24.0, doses, "tocilizumab")),)
    )
    label = "no tocilizumab" if day is None else f"tocilizumab day {day:.2f}"
    return Scenario(
        name or label,
        f"{label}; recorded tocilizumab removed",
        remove=(("toci_exposure", None),),
        add=add,
    )


def bridging_scenario(
    days: tuple[float, ...], units_per_day: float = 1.0, name: str | None = None
) -> Scenario:
    """Another bridging regimen: ``units_per_day`` agents on each of ``days``."""
    add = tuple(
        ("bridging_exposure", Pulse(d, d + 1.0 / 24.0, units_per_day, "bridging"))
        for d in days
    )
    label = name or ("no bridging" if not days else f"bridging x{len(days)}")
    return Scenario(
        label,
        f"{label} instead of the recorded bridging",
        remove=(("bridging_exposure", None),),
        add=add,
    )
