"""Pydantic models at the API boundary: what requests carry and responses hold.

Field names follow the domain objects (:class:`~cartwin.record.model.Observation`,
:class:`~cartwin.twin.version.TwinVersion`); units are UCUM codes; instants
are ISO 8601 with a UTC offset (an instant without one is refused, as
everywhere in cartwin). Patients are named by pseudonym only.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

#: Vital signs the live stream accepts (keys of ``quantities.csv``).
VITAL_QUANTITIES = (
    "temperature",
    "systolic_bp",
    "diastolic_bp",
    "heart_rate",
    "respiratory_rate",
    "spo2",
)

#: Most vital signs in one request or WebSocket message.
MAX_VITALS_PER_REQUEST = 1000

Pseudonym = Annotated[
    str,
    Field(
        pattern=r"^[0-9a-f]{16}$",
        description="Patient pseudonym: keyed hash of the source id, 16 hex digits.",
        examples=["3c9a0f1e5b7d2a48"],
    ),
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ErrorDetail(_Strict):
    """One problem with a request: where it is and what is allowed."""

    status: int = Field(description="HTTP status code.")
    code: str = Field(description="Stable problem code for programs.")
    message: str = Field(description="What is wrong and what is allowed.")
    field: str | None = Field(None, description="Where: body.value, path.pseudonym...")
    value: str | None = Field(None, description="The value received (shortened).")


class ErrorResponse(_Strict):
    """Body of every error response."""

    error: ErrorDetail
    problems: list[ErrorDetail] = Field(
        default_factory=list, description="Every problem found, when several."
    )


class Health(_Strict):
    """Liveness of the service."""

    status: Literal["ok"] = "ok"
    version: str


class VitalIn(_Strict):
    """One vital sign measured at one instant."""

    quantity: Literal[VITAL_QUANTITIES] = Field(  # type: ignore[valid-type]
        description="Quantity key (quantities.csv)."
    )
    value: float = Field(
        allow_inf_nan=False, description="Measured value in `unit` (finite)."
    )
    unit: str | None = Field(
        None,
        min_length=1,
        max_length=40,
        description="UCUM unit; default: the quantity's canonical unit "
        "(Cel, mm[Hg], /min, %).",
    )
    time: AwareDatetime = Field(description="Instant of measurement, with offset.")
    source_id: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        description="Id in the source system (hashed before storing); with "
        "quantity and time it makes a re-sent value a duplicate.",
    )


class StreamVitalIn(VitalIn):
    """A vital sign sent on the WebSocket stream: names its patient."""

    patient: Pseudonym


#: A list of vital signs in one request (1 to ``MAX_VITALS_PER_REQUEST``).
VitalList = Annotated[
    list[VitalIn], Field(min_length=1, max_length=MAX_VITALS_PER_REQUEST)
]
#: A list of vital signs in one WebSocket message.
StreamVitalList = Annotated[
    list[StreamVitalIn], Field(min_length=1, max_length=MAX_VITALS_PER_REQUEST)
]


class VitalsResult(_Strict):
    """What happened to the vital signs of one request (after commit)."""

    pseudonym: Pseudonym
    received: int = Field(ge=0, description="Vital signs in the request.")
    stored: int = Field(ge=0, description="Stored now (committed).")
    duplicates: int = Field(ge=0, description="Already stored; skipped.")
    crs_grade: int | None = Field(
        None, ge=0, le=4, description="Current ASTCT CRS grade (None: no infusion)."
    )
    alerts: list[int] = Field(description="Ids of alerts this request raised.")


class PatientOut(_Strict):
    """A patient visible to the caller."""

    pseudonym: Pseudonym
    n_observations: int
    n_events: int
    n_twin_versions: int
    latest_version: str | None
    disease: str | None = None
    product: str | None = None


class LookupIn(_Strict):
    """A patient named by its id in the source system (sent in a body, not a URL)."""

    source_id: str = Field(min_length=1, max_length=200)


class LookupOut(_Strict):
    """The pseudonym of a looked-up patient."""

    pseudonym: Pseudonym


class VersionHeader(_Strict):
    """What identifies a twin version and what made it."""

    version_id: str
    pseudonym: Pseudonym
    created_at: str
    data_hash: str
    model_name: str
    model_version: str
    package_version: str
    parent_id: str | None
    settings: dict[str, Any]


class VersionFull(VersionHeader):
    """A whole twin version (parameters, posterior and outputs as stored)."""

    parameters: dict[str, Any]
    posterior: dict[str, Any]
    outputs: dict[str, Any]


class ScoresOut(_Strict):
    """Latest scores of a patient, and where they come from."""

    pseudonym: Pseudonym
    source: Literal["twin_version", "record"] = Field(
        description="twin_version: from the latest version; record: computed "
        "from the stored data (the patient has no twin version yet)."
    )
    twin_version: str | None
    scores: list[dict[str, Any]]
    crs_current_grade: int | None
    crs_max_grade: int | None
    icans_max_grade: int | None


class ForecastOut(_Strict):
    """CAR T kinetics forecast of the latest twin version (with its interval)."""

    pseudonym: Pseudonym
    twin_version: str
    kinetics: dict[str, Any]


class CrsOut(_Strict):
    """Live ASTCT CRS timeline and current grade."""

    pseudonym: Pseudonym
    current_grade: int | None
    timeline: dict[str, Any]


class AlertOut(_Strict):
    """A rise of a patient's current CRS grade."""

    alert_id: int
    pseudonym: Pseudonym
    raised_at: str = Field(description="Wall-clock instant the alert was raised.")
    grade_from: int
    grade_to: int
    time: str = Field(description="Data instant of the point with the new grade.")
    study_day: int
    driver: str
    reasons: list[str]
    trigger: Literal["vitals", "import"]


class TwinSettingsIn(_Strict):
    """Settings of a twin build (see cartwin.twin.build.TwinSettings)."""

    interval: float = Field(0.9, gt=0.0, lt=1.0, description="Central interval.")
    n_draws: int = Field(1000, ge=10, le=20000, description="Posterior draws.")
    seed: int = Field(20240101, ge=0, le=2**32 - 1, description="Seed of the draws.")
    t_end_days: float = Field(
        365.0, gt=0.0, le=3650.0, description="Forecast horizon, days after infusion."
    )


class ScenarioIn(TwinSettingsIn):
    """A scenario forecast: other settings now; interventions need the model graph."""

    save: bool = Field(
        False, description="Store the result as a new twin version (write scope)."
    )
    interventions: list[dict[str, Any]] = Field(
        default_factory=list,
        max_length=50,
        description="What-if changes (dose, tocilizumab timing, product...). "
        "Not available yet: any entry gives 501.",
    )


class ScenarioOut(_Strict):
    """Result of a scenario forecast."""

    pseudonym: Pseudonym
    saved: bool
    version: VersionFull


class ImportOut(_Strict):
    """What a FHIR import stored (one transaction)."""

    patients: list[Pseudonym]
    summary: dict[str, Any]
    alerts: list[int]


class AuditOut(_Strict):
    """One audit row."""

    seq: int
    at: str
    token_id: str | None
    method: str
    route: str
    pseudonym: str | None
    twin_version: str | None
    status: int
    outcome: str
