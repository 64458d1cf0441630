"""Clinician dashboard: the page, its read endpoints and ticketed alert streams.

* ``GET /dashboard`` serves a static page (``static/dashboard.html``, ``.js``,
  ``.css``; no token needed, no patient data in it). The page asks for a
  token, keeps it in ``sessionStorage`` and sends it as
  ``Authorization: Bearer`` on every API call.
* ``GET /v1/dashboard/patients``: the patients the token may see, with their
  current journey phase (from the latest twin version, else from the
  record), current CRS grade and alert count.
* ``GET /v1/patients/{pseudonym}/observations?quantity=anc&...``: stored
  values of up to 8 plottable quantities (:data:`SERIES_QUANTITIES`).
* **Stream tickets.** A browser ``EventSource`` cannot send headers, and the
  bearer token must never go into a URL (URLs end up in logs and browser
  history). So the page first calls
  ``POST /v1/patients/{pseudonym}/alerts/stream-ticket`` with its bearer
  token and receives a ticket: ``<payload>.<HMAC-SHA256>`` over the token
  id, the patient, an expiry (:data:`TICKET_SECONDS`) and a random nonce,
  signed with a secret drawn when the app starts (never stored). It then
  opens ``GET /v1/patients/{pseudonym}/alerts/ticket-stream?ticket=...``.
  A ticket is good for one patient, once (its nonce is spent on use), for
  60 s; on use the token must still exist unrevoked and still see the
  patient. Both requests are audited like any other (token id, patient;
  the audit log never keeps query strings). A reconnecting page fetches a
  new ticket and passes ``last_event_id`` so no alert is missed.

Known limits
------------
* Tickets are signed with a per-process secret: a restart voids the
  outstanding ones (the page asks for a new one). Several processes behind
  one balancer would need a shared secret.
* The journey phase of a patient without a twin version loads the whole
  record; a list of thousands of such patients is slow.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import secrets
import threading
import time
from importlib import resources
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response, StreamingResponse

from cartwin.errors import StoreError
from cartwin.service.auth import Principal, Scope
from cartwin.service.deps import (
    PseudonymPath,
    audit_info,
    check_patient,
    check_scope,
    patient,
    require,
    service,
)
from cartwin.service.errors import ApiError
from cartwin.service.routes import errors
from cartwin.service.routes_stream import _sse_response
from cartwin.service.state import ServiceState

router = APIRouter()

#: Seconds a stream ticket stays valid.
TICKET_SECONDS = 60
#: Quantities the observations endpoint serves (vitals, blood counts, CAR T).
SERIES_QUANTITIES = (
    "temperature", "systolic_bp", "diastolic_bp", "heart_rate", "respiratory_rate",
    "spo2", "anc", "alc", "wbc", "platelets", "hemoglobin", "crp", "ferritin",
    "il6", "ldh", "cart_flow", "cart_qpcr",
)  # fmt: skip
#: Most values per quantity returned (the latest ones).
MAX_POINTS = 5000
#: Files of the page, by the name the page asks for, with their media type.
STATIC_FILES = {
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
}
#: Headers of the page and its files: nothing from another origin may load.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; "
        "connect-src 'self'; img-src 'self' data:; base-uri 'none'; "
        "form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


# -- the page -----------------------------------------------------------------
def _static(name: str) -> bytes:
    return resources.files("cartwin.service").joinpath("static", name).read_bytes()


@router.get("/dashboard", include_in_schema=False)
def dashboard_page() -> Response:
    """The dashboard page (static; asks for a token itself)."""
    return Response(
        _static("dashboard.html"), media_type="text/html; charset=utf-8",
        headers=PAGE_HEADERS,
    )  # fmt: skip


@router.get("/dashboard/static/{name}", include_in_schema=False)
def dashboard_file(name: str) -> Response:
    """The page's script and style sheet (only those two names)."""
    if name not in STATIC_FILES:
        raise ApiError(404, "not-found", "no such dashboard file", field="path.name")
    return Response(_static(name), media_type=STATIC_FILES[name], headers=PAGE_HEADERS)


# -- read endpoints of the page ------------------------------------------------
@router.get("/v1/dashboard/patients", responses=errors(403), tags=["dashboard"])
def dashboard_patients(
    request: Request, principal: Principal = Depends(require(Scope.READ))
) -> list[dict[str, Any]]:
    """Visible patients with journey phase, current CRS grade and alert count."""
    state = service(request)
    now = dt.datetime.now(dt.UTC)
    rows = []
    with state.gate.use() as store:
        persons = [p for p in store.persons() if principal.may_see(p.pseudonym)]
        for person in persons:
            rows.append(_summary(state, store, person.pseudonym, now))
    return rows


def _summary(state: ServiceState, store, pseudonym: str, now: dt.datetime) -> dict:
    latest = store.latest_twin_version(pseudonym)
    if latest is not None:
        phases = latest.outputs.get("journey", [])
    else:
        from cartwin.twin.journey import journey_phases

        phases = journey_phases(store.load_record(pseudonym))
    current, _ = state.gate.live.get(store, pseudonym).current()
    alerts = state.alerts.list(pseudonym=pseudonym, after=0, limit=10000)
    return {
        "pseudonym": pseudonym,
        "phase": phase_at(phases, now),
        "crs_current_grade": current,
        "alerts": len(alerts),
        "last_alert_id": alerts[-1].alert_id if alerts else None,
        "latest_version": latest.version_id if latest is not None else None,
    }


def phase_at(phases: list[dict[str, Any]], now: dt.datetime) -> str:
    """Name of the latest journey phase started at ``now`` ("pre-treatment")."""
    name = "pre-treatment"
    for phase in phases:
        if dt.datetime.fromisoformat(phase["start"]) <= now:
            name = phase["phase"]
    return name


@router.get(
    "/v1/patients/{pseudonym}/observations", responses=errors(403, 404, 422),
    tags=["dashboard"],
)  # fmt: skip
def patient_observations(
    request: Request,
    access: tuple = Depends(patient(Scope.READ)),
    quantity: list[Literal[SERIES_QUANTITIES]] = Query(  # type: ignore[valid-type]
        ..., min_length=1, max_length=8, description="Quantity keys."
    ),
) -> dict[str, Any]:
    """Stored values of some quantities (latest ``MAX_POINTS`` each), in time order."""
    pseudonym = access[1]
    _require_stored(service(request), pseudonym)
    with service(request).gate.use() as store:
        record = store.load_record(pseudonym)
    return {
        "pseudonym": pseudonym,
        "infusion": _iso(record.infusion_time),
        "series": {name: _series(record, name) for name in dict.fromkeys(quantity)},
    }


def _series(record, name: str) -> list[dict[str, Any]]:
    points = sorted(record.observations_of(name), key=lambda o: o.time)[-MAX_POINTS:]
    has_day = record.infusion_time is not None
    return [
        {
            "time": o.time.isoformat(), "value": o.value, "unit": o.unit,
            "censored": o.censored,
            "study_day": record.t_days(o.time) if has_day else None,
        }  # fmt: skip
        for o in points
    ]


def _iso(when: dt.datetime | None) -> str | None:
    return None if when is None else when.isoformat()


# -- stream tickets -----------------------------------------------------------
class TicketBook:
    """Signs, checks and spends stream tickets (one per app, in memory)."""

    def __init__(self, seconds: int = TICKET_SECONDS) -> None:
        self._secret = secrets.token_bytes(32)
        self._spent: dict[str, float] = {}
        self._lock = threading.Lock()
        self.seconds = seconds

    def issue(self, token_id: str, pseudonym: str) -> tuple[str, float]:
        """A ticket for ``token_id`` to stream ``pseudonym``; and its expiry."""
        expires = time.time() + self.seconds
        body = {"t": token_id, "p": pseudonym, "e": expires, "n": secrets.token_hex(16)}
        payload = _b64(json.dumps(body, separators=(",", ":")).encode())
        return f"{payload}.{self._sign(payload)}", expires

    def spend(self, ticket: str, pseudonym: str) -> str:
        """The token id of a good, unspent ticket for ``pseudonym``; spends it.

        Raises
        ------
        ApiError
            401 for a forged, malformed, expired, spent or other-patient ticket.
        """
        body = self._verify(ticket)
        now = time.time()
        if body is None or body.get("p") != pseudonym or body.get("e", 0) < now:
            raise _bad_ticket()
        with self._lock:
            self._spent = {n: e for n, e in self._spent.items() if e >= now}
            if body["n"] in self._spent:
                raise _bad_ticket()
            self._spent[body["n"]] = body["e"]
        return body["t"]

    def _verify(self, ticket: str) -> dict | None:
        if not ticket.isascii():  # a real ticket is base64url text
            return None
        payload, _, signature = ticket.partition(".")
        if not hmac.compare_digest(self._sign(payload), signature):
            return None
        try:
            padded = payload + "=" * (-len(payload) % 4)
            body = json.loads(base64.urlsafe_b64decode(padded))
        except ValueError:
            return None
        keys = {"t": str, "p": str, "e": float, "n": str}
        ok = isinstance(body, dict) and all(
            isinstance(body.get(k), kind) for k, kind in keys.items()
        )
        return body if ok else None

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._secret, payload.encode(), hashlib.sha256).digest())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _bad_ticket() -> ApiError:
    return ApiError(
        401, "invalid-ticket",
        "the stream ticket is unknown, expired, spent or for another patient; "
        "get a new one with POST /v1/patients/{pseudonym}/alerts/stream-ticket",
        field="query.ticket", value="(ticket not shown)",
    )  # fmt: skip


def tickets(request: Request) -> TicketBook:
    """The app's :class:`TicketBook` (made on first use)."""
    book = getattr(request.app.state, "dashboard_tickets", None)
    if book is None:
        book = request.app.state.dashboard_tickets = TicketBook()
    return book


@router.post(
    "/v1/patients/{pseudonym}/alerts/stream-ticket", responses=errors(403, 404, 422),
    tags=["alerts"],
)  # fmt: skip
def stream_ticket(
    request: Request, access: tuple = Depends(patient(Scope.READ))
) -> dict[str, Any]:
    """A one-use, 60 s ticket to open the patient's alert stream from a browser."""
    principal, pseudonym = access
    _require_stored(service(request), pseudonym)
    ticket, expires = tickets(request).issue(principal.token_id, pseudonym)
    return {
        "ticket": ticket,
        "expires_at": dt.datetime.fromtimestamp(expires, dt.UTC).isoformat(),
        "stream": f"/v1/patients/{pseudonym}/alerts/ticket-stream",
    }


@router.get(
    "/v1/patients/{pseudonym}/alerts/ticket-stream",
    responses={200: {"description": "Server-Sent Events (as alerts/stream)."},
               **errors(403, 404, 422)},
    tags=["alerts"],
)  # fmt: skip
async def ticket_stream(
    request: Request,
    pseudonym: PseudonymPath,
    ticket: str = Query(..., min_length=10, max_length=600),
    last_event_id: int | None = Query(None, ge=0, le=2**62),
) -> StreamingResponse:
    """Alerts of one patient (SSE) for a holder of a stream ticket (no header)."""
    state, info = service(request), audit_info(request)
    info.pseudonym = pseudonym
    token_id = tickets(request).spend(ticket, pseudonym)
    info.token_id = token_id
    principal = _principal(state, token_id)
    check_patient(principal, pseudonym, info)
    _require_stored(state, pseudonym)
    return _sse_response(state, principal, pseudonym, last_event_id)


def _principal(state: ServiceState, token_id: str) -> Principal:
    """The principal of an unrevoked token named by id (401 when revoked)."""
    rows = state.tokens.db.query(
        "SELECT t.scope, p.pseudonym FROM service_token t "
        "LEFT JOIN service_token_patient p USING (token_id) "
        "WHERE t.token_id = ? AND t.revoked_at IS NULL",
        [token_id],
    )
    if not rows:
        raise _bad_ticket()
    patients = frozenset(row[1] for row in rows if row[1] is not None)
    principal = Principal(token_id, Scope(rows[0][0]), patients or None)
    check_scope(principal, Scope.READ)
    return principal


def _require_stored(state: ServiceState, pseudonym: str) -> None:
    with state.gate.use() as store:
        try:
            store.resolve_patient(pseudonym)
        except StoreError:
            raise ApiError(
                404, "patient-not-found", f"patient {pseudonym} is not in the store",
                field="path.pseudonym", value=pseudonym,
            ) from None  # fmt: skip
