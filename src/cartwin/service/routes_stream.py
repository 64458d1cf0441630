"""Live endpoints: vital signs in (POST, WebSocket), CRS alerts out (SSE).

* ``POST /v1/patients/{pseudonym}/vitals``: one vital sign or a list; the
  answer comes after the commit and says what was stored and the grade. When
  the commit fails the answer is 503 ``not-stored``: nothing of the request
  was stored, and it may be sent again (on the WebSocket too).
* ``WS /v1/vitals/ws``: a stream of messages, each one vital sign or a list
  (each naming its ``patient``); every message is answered with its
  sequence number once stored. The token goes in the ``Authorization``
  header of the handshake (never in the URL). Messages are handled
  concurrently (at most ``WS_IN_FLIGHT`` per connection), so answers may come
  out of order; ``seq`` pairs them.
* ``GET /v1/alerts/stream`` and ``GET /v1/patients/{pseudonym}/alerts/stream``:
  Server-Sent Events, ``event: crs-alert`` with the alert id as event id;
  ``Last-Event-ID`` replays the stored alerts after that id.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Body, Depends, Header, Request, Security, WebSocket
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import TypeAdapter, ValidationError
from starlette.websockets import WebSocketDisconnect

from cartwin.errors import StoreError, UnitError
from cartwin.service.audit import AuditInfo
from cartwin.service.auth import Principal, Scope
from cartwin.service.deps import (
    PseudonymPath,
    audit_info,
    authenticate,
    bearer,
    check_patient,
    check_scope,
    patient,
    require,
    service,
)
from cartwin.service.errors import ApiError, safe_value
from cartwin.service.models import (
    StreamVitalIn,
    StreamVitalList,
    VitalIn,
    VitalList,
    VitalsResult,
)
from cartwin.service.routes import errors
from cartwin.service.state import ServiceState
from cartwin.service.stream import (
    CommitFailed,
    IngestResult,
    PatientNotStored,
    Subscription,
    vital_observation,
)

router = APIRouter(prefix="/v1")

#: Most WebSocket messages of one connection being stored at once.
WS_IN_FLIGHT = 256
#: WebSocket close code for a refused handshake (policy violation).
WS_POLICY_VIOLATION = 1008

_SSE_RESPONSES = {
    200: {
        "description": "Server-Sent Events: `crs-alert` events (AlertOut JSON).",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    },
    **errors(403, 404, 422),
}


# -- vitals ---------------------------------------------------------------------
async def _write_access(
    request: Request,
    pseudonym: PseudonymPath,
    credentials: HTTPAuthorizationCredentials | None = Security(bearer),
) -> tuple[Principal, str]:
    """``patient(Scope.WRITE)`` of :mod:`~cartwin.service.deps`, run on the event loop.

    The same checks in the same order (token, rate limit, scope, access list),
    but as a coroutine: FastAPI runs plain-function dependencies in a worker
    thread, two thread hops per request, which under load cost more than the
    checks themselves (one token lookup in SQLite). This route takes hundreds
    of requests a second.
    """
    token = credentials.credentials if credentials is not None else None
    info = audit_info(request)
    principal = authenticate(service(request), token, info)
    check_scope(principal, Scope.WRITE)
    check_patient(principal, pseudonym, info)
    return principal, pseudonym


@router.post(
    "/patients/{pseudonym}/vitals", response_model=VitalsResult,
    responses=errors(403, 404, 413, 422), tags=["live"],
)  # fmt: skip
async def post_vitals(
    request: Request,
    body: VitalIn | VitalList = Body(...),
    access: tuple = Depends(_write_access),
) -> VitalsResult:
    """Store vital signs (one or a list), re-grade CRS, raise alerts; then answer."""
    state, pseudonym = service(request), access[1]
    vitals = body if isinstance(body, list) else [body]
    observations = _observations(state, vitals, "body")
    result = await _submit(state, pseudonym, observations)
    return _result_out(result)


def _observations(state: ServiceState, vitals: list, where: str) -> list:
    observations = []
    for index, vital in enumerate(vitals):
        try:
            observations.append(vital_observation(vital, state.key))
        except UnitError as exc:
            raise ApiError(
                422, "unit", f"{where}[{index}].unit: {exc}",
                field=f"{where}[{index}].unit", value=safe_value("unit", vital.unit),
            ) from None  # fmt: skip
    return observations


async def _submit(
    state: ServiceState, pseudonym: str, observations: list
) -> IngestResult:
    try:
        return await state.ingestor.submit(pseudonym, observations)
    except PatientNotStored as exc:
        raise ApiError(
            404, "patient-not-found", str(exc), field="pseudonym", value=pseudonym
        ) from None
    except CommitFailed as exc:
        # Answered on the WebSocket too (the app's handlers see HTTP only).
        raise ApiError(
            503, "not-stored", str(exc), field="pseudonym", value=pseudonym,
            headers={"Retry-After": "1"},
        ) from None  # fmt: skip


def _result_out(result: IngestResult) -> VitalsResult:
    return VitalsResult(
        pseudonym=result.pseudonym, received=result.received, stored=result.stored,
        duplicates=result.duplicates, crs_grade=result.crs_grade,
        alerts=list(result.alerts),
    )  # fmt: skip


# -- WebSocket ----------------------------------------------------------------
_ONE = TypeAdapter(StreamVitalIn)
_MANY = TypeAdapter(StreamVitalList)


@router.websocket("/vitals/ws")
async def vitals_ws(websocket: WebSocket) -> None:
    """Stream of vital signs; each message answered once stored (see module doc)."""
    state: ServiceState = websocket.app.state.service
    info = audit_info(websocket)
    try:
        principal = authenticate(state, _bearer(websocket), info)
        check_scope(principal, Scope.WRITE)
    except ApiError as exc:
        await websocket.close(WS_POLICY_VIOLATION, exc.detail["message"][:120])
        return
    await websocket.accept()
    lock, slots = asyncio.Lock(), asyncio.Semaphore(WS_IN_FLIGHT)
    tasks: set[asyncio.Task] = set()
    seq = 0
    try:
        while True:
            text = await websocket.receive_text()
            seq += 1
            await slots.acquire()
            task = asyncio.create_task(
                _ws_answer(state, principal, websocket, lock, text, seq)
            )
            tasks.add(task)
            task.add_done_callback(lambda t: (tasks.discard(t), slots.release()))
    except WebSocketDisconnect:
        pass
    if tasks:
        await asyncio.gather(*tasks, return_exceptions=True)


def _bearer(websocket: WebSocket) -> str | None:
    value = websocket.headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


async def _ws_answer(state, principal, websocket, lock, text: str, seq: int) -> None:
    info = AuditInfo(token_id=principal.token_id)
    try:
        results = await _ws_message(state, principal, text, info)
        reply: dict[str, Any] = {"seq": seq, "results": results}
        status = 200
    except ApiError as exc:
        reply, status = {"seq": seq, "error": exc.detail}, exc.status
    state.audit.append("WS", "/v1/vitals/ws (message)", status, info)
    async with lock:
        try:
            await websocket.send_text(json.dumps(reply))
        except (WebSocketDisconnect, RuntimeError):
            pass  # the client left; its values are stored all the same


async def _ws_message(state, principal: Principal, text: str, info: AuditInfo) -> list:
    wait = state.limiter.acquire(principal.token_id)
    if wait > 0:
        raise ApiError(
            429, "rate-limited", f"over the rate limit; retry after {wait:.2f} s"
        )
    try:
        many = text.lstrip().startswith("[")
        vitals = _MANY.validate_json(text) if many else [_ONE.validate_json(text)]
    except ValidationError as exc:
        raise _ws_invalid(exc) from None
    by_patient: dict[str, list] = {}
    for vital in vitals:
        by_patient.setdefault(vital.patient, []).append(vital)
    for pseudonym in by_patient:
        check_patient(principal, pseudonym, info)
    info.pseudonym = next(iter(by_patient)) if len(by_patient) == 1 else None
    work = [
        _submit(state, p, _observations(state, v, "message"))
        for p, v in by_patient.items()
    ]
    return [_result_out(r).model_dump() for r in await asyncio.gather(*work)]


def _ws_invalid(exc: ValidationError) -> ApiError:
    err = exc.errors()[0]
    field = ".".join(["message", *(str(p) for p in err.get("loc", ()))])
    value = err.get("input")
    return ApiError(
        422, str(err.get("type", "invalid")), f"{field}: {err.get('msg')}",
        field=field, value=None if value is None else safe_value(field, value),
    )  # fmt: skip


# -- Server-Sent Events -------------------------------------------------------
@router.get("/alerts/stream", responses=_SSE_RESPONSES, tags=["alerts"])
async def alert_stream(
    request: Request,
    principal: Principal = Depends(require(Scope.READ)),
    last_event_id: int | None = Header(None, ge=0, le=2**62),
) -> StreamingResponse:
    """CRS alerts of every patient the token may see, as they are raised (SSE)."""
    return _sse_response(service(request), principal, None, last_event_id)


@router.get(
    "/patients/{pseudonym}/alerts/stream", responses=_SSE_RESPONSES, tags=["alerts"]
)
async def patient_alert_stream(
    request: Request,
    access: tuple = Depends(patient(Scope.READ)),
    last_event_id: int | None = Header(None, ge=0, le=2**62),
) -> StreamingResponse:
    """CRS alerts of one patient, as they are raised (SSE)."""
    principal, pseudonym = access
    state = service(request)
    with state.gate.use() as store:
        try:
            store.resolve_patient(pseudonym)
        except StoreError:
            raise ApiError(
                404, "patient-not-found", f"patient {pseudonym} is not in the store",
                field="path.pseudonym", value=pseudonym,
            ) from None  # fmt: skip
    return _sse_response(state, principal, pseudonym, last_event_id)


def _sse_response(state, principal, pseudonym, last_id) -> StreamingResponse:
    sub = state.broker.subscribe(principal, pseudonym)
    return StreamingResponse(
        _events(state, sub, last_id),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _events(state, sub: Subscription, last_id: int | None) -> AsyncIterator[str]:
    keepalive = state.settings.sse_keepalive_seconds
    sent = last_id or 0
    try:
        yield "retry: 2000\n: subscribed\n\n"
        if last_id is not None:
            missed = await run_in_threadpool(
                state.alerts.list, pseudonym=sub.pseudonym, after=last_id, limit=10000
            )
            for alert in missed:
                if sub.accepts(alert):
                    sent = alert.alert_id
                    yield _event(alert)
        while True:
            try:
                async with asyncio.timeout(keepalive):
                    alerts = [await sub.queue.get()]
            except TimeoutError:
                yield ": keepalive\n\n"
                continue
            # Alerts raised by one commit arrive together: one write for all.
            while not sub.queue.empty():
                alerts.append(sub.queue.get_nowait())
            chunk, sent, ended = _chunk(alerts, sent)
            if chunk:
                yield chunk
            if ended:
                break
            if sub.overflowed and sub.queue.empty():
                yield _overflow(sent)
                break
    finally:
        state.broker.unsubscribe(sub)


def _chunk(alerts: list, sent: int) -> tuple[str, int, bool]:
    """Events of ``alerts`` newer than ``sent``; the last id sent; whether ended.

    ``None`` in the queue ends the stream (the service is stopping).
    """
    events = []
    for alert in alerts:
        if alert is None:
            return "".join(events), sent, True
        if alert.alert_id > sent:
            sent = alert.alert_id
            events.append(_event(alert))
    return "".join(events), sent, False


def _event(alert) -> str:
    data = json.dumps(alert.to_dict())
    return f"id: {alert.alert_id}\nevent: crs-alert\ndata: {data}\n\n"


def _overflow(last_sent: int) -> str:
    data = json.dumps({
        "message": "this subscriber fell behind and was cut off; reconnect with "
        f"Last-Event-ID: {last_sent} to receive the alerts after it",
        "last_event_id": last_sent,
    })  # fmt: skip
    return f"event: overflow\ndata: {data}\n\n"
