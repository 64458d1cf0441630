"""Patient, twin, score, forecast, scenario, import and audit endpoints (``/v1``).

Handlers that touch the store are plain functions (FastAPI runs them in its
thread pool) and hold the store lock only while reading or writing; twin
builds run outside it. Every handler tells the audit log which patient and
twin version it served.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool

from cartwin import __version__
from cartwin.errors import CartwinError, StoreError
from cartwin.io.problems import FhirImportError
from cartwin.record.pseudonym import source_token
from cartwin.service.auth import Principal, Scope
from cartwin.service.deps import (
    audit_info,
    check_patient,
    check_scope,
    patient,
    require,
    service,
)
from cartwin.service.errors import ApiError, safe_value
from cartwin.service.models import (
    AlertOut,
    AuditOut,
    CrsOut,
    ErrorResponse,
    ForecastOut,
    Health,
    ImportOut,
    LookupIn,
    LookupOut,
    PatientOut,
    ScenarioIn,
    ScenarioOut,
    ScoresOut,
    TwinSettingsIn,
    VersionFull,
    VersionHeader,
)
from cartwin.service.state import ServiceState

router = APIRouter(prefix="/v1")

_DESCRIPTIONS = {
    400: "Malformed request.",
    401: "No token, or an unknown or revoked one.",
    403: "Scope too low, or patient outside the token's access list (audited).",
    404: "No such patient, twin version or resource.",
    413: "Request body over the size limit.",
    422: "Invalid input; every problem is listed with its field and value.",
    429: "Over the token's rate limit; see Retry-After.",
    501: "Needs a feature that is not built yet; the message names it.",
    503: "The store could not serve the request.",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for the given error statuses (plus 400/401/429/503)."""
    chosen = sorted({400, 401, 429, 503, *codes})
    return {
        c: {"model": ErrorResponse, "description": _DESCRIPTIONS[c]} for c in chosen
    }


_PATIENT_ERRORS = errors(403, 404, 422)


@router.get("/health", response_model=Health, tags=["service"])
def health() -> Health:
    """Liveness check (no token needed, not audited)."""
    return Health(version=__version__)


# -- patients -----------------------------------------------------------------
@router.get(
    "/patients",
    response_model=list[PatientOut],
    responses=errors(403),
    tags=["patients"],
)
def list_patients(
    request: Request, principal: Principal = Depends(require(Scope.READ))
) -> list[PatientOut]:
    """Patients the token may see, by pseudonym."""
    with service(request).gate.use() as store:
        persons = store.persons()
    return [_patient_out(p) for p in persons if principal.may_see(p.pseudonym)]


def _patient_out(person) -> PatientOut:
    data = dataclasses.asdict(person)
    data.pop("person_id", None)
    return PatientOut(**data)


@router.post(
    "/patients/lookup", response_model=LookupOut, responses=errors(403, 404, 413, 422),
    tags=["patients"],
)  # fmt: skip
def lookup_patient(
    request: Request,
    body: LookupIn,
    principal: Principal = Depends(require(Scope.READ)),
) -> LookupOut:
    """Pseudonym of a patient named by its source id (hashed here with the key)."""
    state = service(request)
    try:
        with state.gate.use() as store:
            pseudonym = store.resolve_patient(body.source_id, state.key)
    except StoreError:
        raise ApiError(
            404, "patient-not-found",
            "no stored patient has this source id under the service's key",
            field="body.source_id", value=safe_value("source_id", body.source_id),
        ) from None  # fmt: skip
    check_patient(principal, pseudonym, audit_info(request))
    return LookupOut(pseudonym=pseudonym)


@router.get(
    "/patients/{pseudonym}", response_model=PatientOut, responses=_PATIENT_ERRORS,
    tags=["patients"],
)  # fmt: skip
def get_patient(
    request: Request, access: tuple = Depends(patient(Scope.READ))
) -> PatientOut:
    """One patient: data volume and latest twin version."""
    _, pseudonym = access
    with service(request).gate.use() as store:
        persons = [p for p in store.persons() if p.pseudonym == pseudonym]
    if not persons:
        raise _not_found(pseudonym)
    audit_info(request).twin_version = persons[0].latest_version
    return _patient_out(persons[0])


def _not_found(pseudonym: str) -> ApiError:
    return ApiError(
        404, "patient-not-found", f"patient {pseudonym} is not in the store",
        field="path.pseudonym", value=pseudonym,
    )  # fmt: skip


def _versions(state: ServiceState, pseudonym: str) -> list:
    with state.gate.use() as store:
        try:
            store.resolve_patient(pseudonym)
        except StoreError:
            raise _not_found(pseudonym) from None
        return store.twin_versions(pseudonym)


# -- twin versions ------------------------------------------------------------
@router.get(
    "/patients/{pseudonym}/twin-versions", response_model=list[VersionHeader],
    responses=_PATIENT_ERRORS, tags=["twins"],
)  # fmt: skip
def list_versions(
    request: Request, access: tuple = Depends(patient(Scope.READ))
) -> list[VersionHeader]:
    """Every twin version of the patient, oldest first."""
    versions = _versions(service(request), access[1])
    if versions:
        audit_info(request).twin_version = versions[-1].version_id
    return [VersionHeader(**_header(v)) for v in versions]


def _header(version) -> dict[str, Any]:
    data = version.to_dict()
    return {k: data[k] for k in VersionHeader.model_fields}


@router.get(
    "/patients/{pseudonym}/twin-versions/{version_id}", response_model=VersionFull,
    responses=_PATIENT_ERRORS, tags=["twins"],
)  # fmt: skip
def get_version_full(
    request: Request,
    version_id: str,
    access: tuple = Depends(patient(Scope.READ)),
) -> VersionFull:
    """One twin version, whole (settings, parameters, posterior, outputs)."""
    for version in _versions(service(request), access[1]):
        if version.version_id == version_id:
            audit_info(request).twin_version = version_id
            return VersionFull(**json_safe(version.to_dict()))
    raise ApiError(
        404, "version-not-found",
        f"patient {access[1]} has no twin version {safe_value('version', version_id)}",
        field="path.version_id", value=safe_value("version", version_id),
    )  # fmt: skip


@router.post(
    "/patients/{pseudonym}/twin-versions", response_model=VersionHeader,
    status_code=201, responses=errors(403, 404, 413, 422), tags=["twins"],
)  # fmt: skip
def create_version(
    request: Request,
    settings: TwinSettingsIn = Body(default_factory=TwinSettingsIn),
    access: tuple = Depends(patient(Scope.WRITE)),
) -> VersionHeader:
    """Calibrate the twin on all stored data now and store the new version."""
    version = _build(service(request), access[1], settings, save=True)
    audit_info(request).twin_version = version.version_id
    return VersionHeader(**_header(version))


def _build(
    state: ServiceState, pseudonym: str, settings: TwinSettingsIn, *, save: bool
):
    from cartwin.twin.build import TwinSettings, build_twin

    with state.gate.use() as store:
        try:
            record = store.load_record(pseudonym)
        except StoreError:
            raise _not_found(pseudonym) from None
        parent = store.latest_twin_version(pseudonym)
    fields = {
        k: getattr(settings, k) for k in ("interval", "n_draws", "seed", "t_end_days")
    }
    version = build_twin(record, settings=TwinSettings(**fields), parent=parent)
    if save:
        with state.gate.use() as store:
            store.save_twin_version(version)
    return version


# -- scores, forecasts, CRS, alerts -----------------------------------------
@router.get(
    "/patients/{pseudonym}/scores", response_model=ScoresOut,
    responses=_PATIENT_ERRORS, tags=["scores"],
)  # fmt: skip
def get_scores(
    request: Request, access: tuple = Depends(patient(Scope.READ))
) -> ScoresOut:
    """Latest scores: from the latest twin version, else from the stored data."""
    from cartwin.scores import baseline_scores, icans_timeline

    state, pseudonym = service(request), access[1]
    with state.gate.use() as store:
        versions = _versions(state, pseudonym)
        live = state.gate.live.get(store, pseudonym)
        current, _ = live.current()
        record = None if versions else store.load_record(pseudonym)
    if versions:
        latest = versions[-1]
        audit_info(request).twin_version = latest.version_id
        out = latest.outputs
        return ScoresOut(
            pseudonym=pseudonym, source="twin_version", twin_version=latest.version_id,
            scores=json_safe(out.get("scores", [])), crs_current_grade=current,
            crs_max_grade=out.get("crs", {}).get("max_grade"),
            icans_max_grade=out.get("icans", {}).get("max_grade"),
        )  # fmt: skip
    return ScoresOut(
        pseudonym=pseudonym, source="record", twin_version=None,
        scores=json_safe([s.to_dict() for s in baseline_scores(record)]),
        crs_current_grade=current, crs_max_grade=live.timeline().max_grade,
        icans_max_grade=icans_timeline(record).max_grade,
    )  # fmt: skip


@router.get(
    "/patients/{pseudonym}/forecasts", response_model=ForecastOut,
    responses=_PATIENT_ERRORS, tags=["twins"],
)  # fmt: skip
def get_forecast(
    request: Request, access: tuple = Depends(patient(Scope.READ))
) -> ForecastOut:
    """CAR T kinetics forecast (median and interval) of the latest twin version."""
    pseudonym = access[1]
    versions = _versions(service(request), pseudonym)
    if not versions:
        raise ApiError(
            404, "no-twin-version",
            f"patient {pseudonym} has no twin version yet; make one with "
            f"POST /v1/patients/{pseudonym}/twin-versions",
            field="path.pseudonym", value=pseudonym,
        )  # fmt: skip
    latest = versions[-1]
    audit_info(request).twin_version = latest.version_id
    kinetics = json_safe(latest.outputs.get("kinetics", {}))
    return ForecastOut(
        pseudonym=pseudonym, twin_version=latest.version_id, kinetics=kinetics
    )


@router.get(
    "/patients/{pseudonym}/crs", response_model=CrsOut,
    responses=_PATIENT_ERRORS, tags=["scores"],
)  # fmt: skip
def get_crs(request: Request, access: tuple = Depends(patient(Scope.READ))) -> CrsOut:
    """Live ASTCT CRS timeline (every evaluation instant) and current grade."""
    state, pseudonym = service(request), access[1]
    with state.gate.use() as store:
        try:
            live = state.gate.live.get(store, pseudonym)
        except StoreError:
            raise _not_found(pseudonym) from None
        current, _ = live.current()
        timeline = live.timeline().to_dict()
    return CrsOut(pseudonym=pseudonym, current_grade=current, timeline=timeline)


@router.get(
    "/patients/{pseudonym}/alerts", response_model=list[AlertOut],
    responses=_PATIENT_ERRORS, tags=["alerts"],
)  # fmt: skip
def patient_alerts(
    request: Request,
    access: tuple = Depends(patient(Scope.READ)),
    after: int = Query(0, ge=0, le=2**62, description="Only alerts with a larger id."),
    limit: int = Query(100, ge=1, le=1000, description="Most alerts returned."),
) -> list[AlertOut]:
    """CRS alerts of the patient, oldest first."""
    alerts = service(request).alerts.list(pseudonym=access[1], after=after, limit=limit)
    return [AlertOut(**a.to_dict()) for a in alerts]


@router.get(
    "/alerts",
    response_model=list[AlertOut],
    responses=errors(403, 422),
    tags=["alerts"],
)
def all_alerts(
    request: Request,
    principal: Principal = Depends(require(Scope.READ)),
    after: int = Query(0, ge=0, le=2**62, description="Only alerts with a larger id."),
    limit: int = Query(100, ge=1, le=1000, description="Most alerts returned."),
) -> list[AlertOut]:
    """CRS alerts of every patient the token may see, oldest first."""
    state, found = service(request), []
    while len(found) < limit:
        batch = state.alerts.list(after=after, limit=limit)
        if not batch:
            break
        found += [a for a in batch if principal.may_see(a.pseudonym)]
        after = batch[-1].alert_id
    return [AlertOut(**a.to_dict()) for a in found[:limit]]


# -- scenarios ----------------------------------------------------------------
#: Why interventions cannot be forecast yet (named in the 501 answer).
GRAPH_MISSING = (
    "scenario interventions (dose, product, tocilizumab or steroid timing) need "
    "scenario forecasting on the calibrated multi-scale model graph "
    "(cartwin.graph: ModelGraph calibration and compare_scenarios), which is "
    "being built by another engineer and is not wired into the service yet; "
    "only forecast settings (seed, interval, n_draws, t_end_days) can be "
    "changed now"
)


@router.post(
    "/patients/{pseudonym}/scenarios", response_model=ScenarioOut,
    responses=errors(403, 404, 413, 422, 501), tags=["twins"],
)  # fmt: skip
def scenario(
    request: Request,
    body: ScenarioIn = Body(default_factory=ScenarioIn),
    access: tuple = Depends(patient(Scope.READ)),
) -> ScenarioOut:
    """Forecast under other settings (interventions: 501 until the model graph)."""
    principal, pseudonym = access
    _versions(service(request), pseudonym)  # 404 when the patient is not stored
    if body.interventions:
        raise ApiError(
            501, "needs-model-graph", GRAPH_MISSING, field="body.interventions",
            value=safe_value("interventions", body.interventions),
        )  # fmt: skip
    if body.save:
        check_scope(principal, Scope.WRITE)
    version = _build(service(request), pseudonym, body, save=body.save)
    audit_info(request).twin_version = version.version_id
    return ScenarioOut(
        pseudonym=pseudonym,
        saved=body.save,
        version=VersionFull(**json_safe(version.to_dict())),
    )


# -- import -------------------------------------------------------------------
_FHIR_BODY = {
    "requestBody": {
        "required": True,
        "description": "A FHIR R4 Bundle or one resource (JSON), e.g. an Observation.",
        "content": {
            ctype: {"schema": {"type": "object", "required": ["resourceType"],
                               "properties": {"resourceType": {"type": "string"}}}}
            for ctype in ("application/fhir+json", "application/json")
        },
    }
}  # fmt: skip


@router.post(
    "/imports/fhir", response_model=ImportOut, status_code=201,
    responses=errors(403, 413, 422), openapi_extra=_FHIR_BODY, tags=["import"],
)  # fmt: skip
async def import_fhir_body(
    request: Request, principal: Principal = Depends(require(Scope.WRITE))
) -> ImportOut:
    """Import a FHIR Bundle or resource with the CLI's importer, in one transaction."""
    state = service(request)
    raw = await request.body()
    result = await run_in_threadpool(
        _import, state, raw, principal, audit_info(request)
    )
    summary, alerts = result
    state.broker.publish(alerts)
    return ImportOut(
        patients=summary["patients"], summary=summary["store"],
        alerts=[a.alert_id for a in alerts],
    )  # fmt: skip


def _import(state: ServiceState, raw: bytes, principal: Principal, info) -> tuple:
    from cartwin.io.formats import ReadOptions, read_source

    options = ReadOptions(site_utc_offset_min=state.settings.site_utc_offset_min)
    try:
        parsed = read_source(raw, "fhir", key=state.key, options=options)
    except FhirImportError as exc:
        raise _import_problems(exc, state.key) from None
    pseudonyms = list(dict.fromkeys(r.facts.pseudonym for r in parsed.records))
    for pseudonym in pseudonyms:
        check_patient(principal, pseudonym, info)
    info.pseudonym = pseudonyms[0] if len(pseudonyms) == 1 else None
    with state.gate.use() as store:
        summary = store.import_records(
            parsed.records, source_name="FHIR via cartwin service",
            source_sha256=parsed.source_sha256, report=parsed.report.to_dict(),
        )  # fmt: skip
        changes = [_reload(state, store, p) for p in pseudonyms]
    alerts = state.alerts.add([c for c in changes if c is not None], "import")
    return {"patients": pseudonyms, "store": summary.to_dict()}, alerts


def _reload(state: ServiceState, store, pseudonym: str):
    """Rebuild a live CRS cache after an import; the import stands if grading fails."""
    try:
        return state.gate.live.reload(store, pseudonym)
    except CartwinError:
        state.gate.live.drop(pseudonym)
        return None


WITHHELD_FIELD = "(withheld: patient field)"
_PATIENT_FIELDS = ("subject", "patient", "name", "birthDate", "identifier",
                   "address", "telecom", "reference")  # fmt: skip


def _import_problems(exc: FhirImportError, key: bytes) -> ApiError:
    """422 listing every problem; resource ids hashed, patient fields withheld."""
    problems = []
    for p in exc.problems[:200]:
        withheld = any(name in p.field for name in _PATIENT_FIELDS)
        where = " ".join(x for x in (source_token(p.resource, key), p.location) if x)
        problems.append({
            "status": 422, "code": p.code,
            "message": f"{where}: {p.message}" if where else p.message,
            "field": p.field or None,
            "value": WITHHELD_FIELD if withheld and p.value else (p.value or None),
        })  # fmt: skip
    first = problems[0] if problems else {
        "status": 422, "code": "invalid", "message": "invalid FHIR", "field": None,
        "value": None}  # fmt: skip
    message = (
        f"{len(exc.problems)} problem(s) in the FHIR body; first: {first['message']}"
    )
    return ApiError(
        422, first["code"], message, field=first["field"], value=first["value"],
        problems=problems,
    )  # fmt: skip


# -- audit --------------------------------------------------------------------
@router.get(
    "/audit",
    response_model=list[AuditOut],
    responses=errors(403, 422),
    tags=["service"],
)
def read_audit(
    request: Request,
    principal: Principal = Depends(require(Scope.ADMIN)),
    after: int = Query(0, ge=0, le=2**62, description="Only rows with a larger seq."),
    limit: int = Query(1000, ge=1, le=10000, description="Most rows returned."),
) -> list[AuditOut]:
    """Audit rows, oldest first (admin scope)."""
    rows = service(request).audit.entries(after=after, limit=limit)
    return [AuditOut(**row.to_dict()) for row in rows]


def json_safe(value: Any) -> Any:
    """``value`` with non-finite floats replaced by ``None`` (strict JSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value
