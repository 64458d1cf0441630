"""Typed, time-stamped patient data: observations, events and facts.

A :class:`PatientRecord` is what every io adapter produces and what every model,
score and report reads. All instants are timezone-aware UTC ``datetime``
objects; the offset the source gave is kept in ``source_utc_offset_min`` so the
local calendar day can be recovered. Values are in the canonical unit of their
quantity (see :mod:`cartwin.record.units`).

Study days follow ``DESIGN.md``: day 0 is the calendar day of CAR T infusion in
the site's zone, so an observation at 23:00 local time on the infusion day is on
day 0 even when it is already the next day in UTC. Fractional times used by the
models (``t_days``) are measured from the infusion instant itself.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

from cartwin.errors import DataError

#: Kinds of clinical event a record may hold.
EVENT_KINDS = (
    "leukapheresis",
    "bridging",
    "lymphodepletion",
    "infusion",
    "tocilizumab",
    "corticosteroid",
    "vasopressor",
    "oxygen",
    "icu",
    "antipyretic",
    "seizure",
    "consciousness",
    "cerebral_edema",
    "motor_weakness",
)


@dataclass(frozen=True)
class Observation:
    """One measured value of one quantity at one instant.

    Attributes
    ----------
    quantity : str
        Key from ``quantities.csv`` (``"crp"``, ``"cart_qpcr"``, ...).
    time : datetime.datetime
        Instant of measurement (effective time), timezone-aware UTC.
    value : float
        Value in the canonical unit of ``quantity``. For a censored value this
        is the limit of quantification.
    unit : str
        Canonical UCUM unit (repeated for readability of exports).
    censored : str or None
        ``"below"`` when the true value lies below ``value`` (< LLOQ),
        ``"above"`` when above an upper limit, ``None`` when exact.
    source_code : str
        ``system|code`` of the source coding, kept for provenance.
    source_value : float
        Value as the source gave it.
    source_unit : str
        Unit as the source gave it.
    source_id : str
        Identifier of the source resource (e.g. FHIR ``Observation/abc``).
    source_utc_offset_min : int
        UTC offset of the source timestamp, in minutes.
    """

    quantity: str
    time: dt.datetime
    value: float
    unit: str
    censored: str | None = None
    source_code: str = ""
    source_value: float = float("nan")
    source_unit: str = ""
    source_id: str = ""
    source_utc_offset_min: int = 0


@dataclass(frozen=True)
class Event:
    """A clinical event: a procedure, a drug given, a support started.

    Attributes
    ----------
    kind : str
        One of :data:`EVENT_KINDS`.
    start : datetime.datetime
        Start instant, timezone-aware UTC.
    end : datetime.datetime or None
        End instant; ``None`` for instantaneous or open-ended events.
    name : str
        Drug, product or procedure name as coded (e.g. ``"tocilizumab"``).
    dose : float or None
        Amount given, in ``dose_unit``. For an infusion: CAR T cells.
    dose_unit : str
        UCUM unit of ``dose`` (``"mg"``, ``"mg/m2"``, ``"{cells}"``, ``"L/min"``).
    detail : str
        Extra qualifier from the code map's ``kind:detail`` target: oxygen
        support level (``"low_flow"``, ``"high_flow"``, ``"positive_pressure"``,
        the ASTCT hypoxia tiers), ``"vasopressin"`` for vasopressors,
        consciousness level, seizure type, ``"requested"`` for orders.
    source_code : str
        ``system|code`` of the source coding.
    source_id : str
        Identifier of the source resource.
    source_utc_offset_min : int
        UTC offset of the source timestamp, in minutes.
    """

    kind: str
    start: dt.datetime
    end: dt.datetime | None = None
    name: str = ""
    dose: float | None = None
    dose_unit: str = ""
    detail: str = ""
    source_code: str = ""
    source_id: str = ""
    source_utc_offset_min: int = 0

    def active_at(self, when: dt.datetime) -> bool:
        """Whether the event covers ``when`` (instantaneous events never do)."""
        if self.end is None:
            return False
        return self.start <= when <= self.end


@dataclass(frozen=True)
class PatientFacts:
    """Facts about the patient that do not change with time.

    No direct identifier is held: ``pseudonym`` is a keyed hash of the source
    id, and the birth date is reduced to the age in whole years at infusion
    (at the last data point when there is no infusion).

    Attributes
    ----------
    pseudonym : str
        Keyed hash of the source patient id (see :mod:`cartwin.record.pseudonym`).
    age_years : int or None
        Age in completed years at the reference instant.
    sex : str or None
        ``"female"``, ``"male"``, ``"other"`` or ``"unknown"`` (FHIR gender).
    diagnosis : str or None
        Primary diagnosis display text, e.g. ``"Diffuse large B-cell lymphoma"``.
    diagnosis_code : str or None
        ``system|code`` of the diagnosis.
    disease : str or None
        cartwin disease group: ``"LBCL"``, ``"MM"``, ``"B-ALL"``, ``"other"``.
    product : str or None
        CAR T product name, e.g. ``"axicabtagene ciloleucel"``.
    """

    pseudonym: str
    age_years: int | None = None
    sex: str | None = None
    diagnosis: str | None = None
    diagnosis_code: str | None = None
    disease: str | None = None
    product: str | None = None


@dataclass(frozen=True)
class PatientRecord:
    """All data of one patient, immutable.

    Observations and events are kept sorted by time. Use :meth:`series` to get
    the arrays a model needs and :meth:`study_day` to place an instant on the
    infusion-relative calendar.
    """

    facts: PatientFacts
    observations: tuple[Observation, ...] = ()
    events: tuple[Event, ...] = ()
    site_utc_offset_min: int | None = None

    def __post_init__(self) -> None:
        for item in (*self.observations, *(e.start for e in self.events)):
            when = item.time if isinstance(item, Observation) else item
            if when.tzinfo is None:
                raise DataError("PatientRecord needs timezone-aware instants")
        object.__setattr__(
            self, "observations", tuple(sorted(self.observations, key=_obs_key))
        )
        object.__setattr__(
            self, "events", tuple(sorted(self.events, key=lambda e: e.start))
        )

    # -- time ---------------------------------------------------------------
    @property
    def infusion(self) -> Event | None:
        """The (first) CAR T infusion given, or ``None``; orders do not count."""
        for event in self.events:
            if event.kind == "infusion" and event.detail != "requested":
                return event
        return None

    @property
    def infusion_time(self) -> dt.datetime | None:
        """Instant of CAR T infusion, or ``None`` when there is none."""
        event = self.infusion
        return None if event is None else event.start

    def _site_offset(self) -> dt.timedelta:
        if self.site_utc_offset_min is not None:
            return dt.timedelta(minutes=self.site_utc_offset_min)
        event = self.infusion
        minutes = event.source_utc_offset_min if event is not None else 0
        return dt.timedelta(minutes=minutes)

    def study_day(self, when: dt.datetime) -> int:
        """Calendar day of ``when`` relative to infusion day 0, in the site's zone.

        Raises
        ------
        DataError
            When the record has no infusion event (no study day exists).
        """
        start = self.infusion_time
        if start is None:
            raise DataError(
                f"patient {self.facts.pseudonym} has no infusion event, so no study day"
            )
        offset = self._site_offset()
        return ((when + offset).date() - (start + offset).date()).days

    def t_days(self, when: dt.datetime) -> float:
        """Time since the infusion instant in fractional days."""
        start = self.infusion_time
        if start is None:
            raise DataError(
                f"patient {self.facts.pseudonym} has no infusion event, so no study time"
            )
        return (when - start).total_seconds() / 86400.0

    # -- selection ------------------------------------------------------------
    def observations_of(self, quantity: str) -> tuple[Observation, ...]:
        """All observations of ``quantity`` in time order."""
        return tuple(o for o in self.observations if o.quantity == quantity)

    def events_of(self, *kinds: str) -> tuple[Event, ...]:
        """All events of the given kinds in time order."""
        return tuple(e for e in self.events if e.kind in kinds)

    def quantities(self) -> dict[str, int]:
        """Number of observations per quantity."""
        counts: dict[str, int] = {}
        for obs in self.observations:
            counts[obs.quantity] = counts.get(obs.quantity, 0) + 1
        return counts

    def series(self, quantity: str) -> "Series":
        """Arrays of one quantity for a model: days since infusion, values, flags."""
        rows = self.observations_of(quantity)
        t_days = np.array([self.t_days(o.time) for o in rows], dtype=float)
        values = np.array([o.value for o in rows], dtype=float)
        below = np.array([o.censored == "below" for o in rows], dtype=bool)
        return Series(quantity=quantity, t_days=t_days, values=values, below_lloq=below)

    def with_data(
        self,
        observations: Iterable[Observation] = (),
        events: Iterable[Event] = (),
    ) -> PatientRecord:
        """Return a new record with more observations and events added."""
        return PatientRecord(
            facts=self.facts,
            observations=(*self.observations, *observations),
            events=(*self.events, *events),
            site_utc_offset_min=self.site_utc_offset_min,
        )


@dataclass(frozen=True)
class Series:
    """One quantity of one patient as arrays (time in days since infusion)."""

    quantity: str
    t_days: np.ndarray
    values: np.ndarray
    below_lloq: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))

    def __len__(self) -> int:
        return int(self.t_days.size)


def _obs_key(obs: Observation) -> tuple:
    return (obs.time, obs.quantity, obs.source_id)
