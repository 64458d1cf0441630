"""Append-only audit log of every request: who, what, when, which version, outcome.

Each request to the API (health and documentation pages excepted) adds one
row when its response starts (for a stream: when it opens; for a WebSocket:
when it is accepted or refused, and one row per message). A row holds

* ``token_id``: the public id of the token, ``NULL`` when none was valid;
* ``method`` and ``route``: the route *template* (``/v1/patients/{pseudonym}``),
  never the raw path, so nothing a client typed into a URL is kept;
* ``pseudonym``: the patient, only when it has the shape of a pseudonym;
* ``twin_version``: the twin version read or written, when there is one;
* ``status`` and ``outcome``: HTTP status and a short fixed phrase.

Nothing else from the request is written: no query string, no body, no error
message (messages may quote the client's values). The table is append-only
(SQLite triggers) and hash-chained (:meth:`AuditLog.verify`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Any

from cartwin.record.pseudonym import looks_like_pseudonym
from cartwin.service.db import ServiceDB

logger = logging.getLogger(__name__)

#: Key of the per-request :class:`AuditInfo` in the ASGI scope.
SCOPE_KEY = "cartwin.audit"
#: Paths never audited (no patient data): health and API documentation.
UNAUDITED = ("/v1/health", "/openapi.json", "/docs", "/redoc")
_GENESIS = "0" * 64

_OUTCOMES = {
    101: "accepted",
    400: "bad request",
    401: "unauthenticated",
    403: "denied",
    404: "not found",
    405: "method not allowed",
    409: "conflict",
    413: "body too large",
    422: "invalid input",
    429: "rate limited",
    500: "server error",
    501: "not implemented",
    503: "unavailable",
}


@dataclass
class AuditInfo:
    """What the handlers of one request tell the audit log (mutable, per request)."""

    token_id: str | None = None
    pseudonym: str | None = None
    twin_version: str | None = None
    outcome: str | None = None


@dataclass(frozen=True)
class AuditEntry:
    """One row of the audit log."""

    seq: int
    at: str
    token_id: str | None
    method: str
    route: str
    pseudonym: str | None
    twin_version: str | None
    status: int
    outcome: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready mapping."""
        return dict(self.__dict__)


_COLUMNS = "seq, at, token_id, method, route, pseudonym, twin_version, status, outcome"


class AuditLog:
    """Append and read audit rows in the service database."""

    def __init__(self, db: ServiceDB) -> None:
        self.db = db

    def append(
        self, method: str, route: str, status: int, info: AuditInfo | None = None
    ) -> None:
        """Add one row; pseudonyms of the wrong shape are dropped, not stored."""
        info = info or AuditInfo()
        pseudonym = info.pseudonym
        if pseudonym is not None and not looks_like_pseudonym(pseudonym):
            pseudonym = None
        outcome = info.outcome or _OUTCOMES.get(
            status, "ok" if status < 400 else "error"
        )
        at = dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")
        values = [at, info.token_id, method, route, pseudonym, info.twin_version,
                  status, outcome]  # fmt: skip
        with self.db.transaction() as con:
            prev = con.execute(
                "SELECT row_hash FROM audit_log ORDER BY seq DESC LIMIT 1"
            ).fetchone()
            prev_hash = prev[0] if prev else _GENESIS
            con.execute(
                "INSERT INTO audit_log (at, token_id, method, route, pseudonym, "
                "twin_version, status, outcome, prev_hash, row_hash) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [*values, prev_hash, _row_hash(prev_hash, values)],
            )

    def entries(
        self, *, after: int = 0, limit: int = 1000, pseudonym: str | None = None
    ) -> list[AuditEntry]:
        """Rows with ``seq > after``, oldest first, optionally of one patient."""
        where, params = "seq > ?", [after]
        if pseudonym is not None:
            where += " AND pseudonym = ?"
            params.append(pseudonym)
        rows = self.db.query(
            f"SELECT {_COLUMNS} FROM audit_log WHERE {where} ORDER BY seq LIMIT ?",
            [*params, limit],
        )
        return [AuditEntry(*row) for row in rows]

    def verify(self) -> int | None:
        """``seq`` of the first row whose hash chain is broken; ``None`` if intact."""
        rows = self.db.query(
            f"SELECT {_COLUMNS}, prev_hash, row_hash FROM audit_log ORDER BY seq"
        )
        prev_hash = _GENESIS
        for row in rows:
            values = list(row[1:9])
            if row[9] != prev_hash or row[10] != _row_hash(prev_hash, values):
                return row[0]
            prev_hash = row[10]
        return None


def _row_hash(prev_hash: str, values: list) -> str:
    text = json.dumps([prev_hash, *values], separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def route_template(scope: dict) -> str:
    """The matched route's path template, or ``"(no route)"``."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "(no route)"


class AuditMiddleware:
    """ASGI middleware writing one audit row per HTTP request or WebSocket.

    The row is written when the response starts, before its headers are sent,
    so an acknowledged request is always in the log. Handlers fill the
    request's :class:`AuditInfo` (``request.scope[SCOPE_KEY]``).
    """

    def __init__(self, app, audit: AuditLog) -> None:
        self.app = app
        self.audit = audit

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"] in UNAUDITED:
            await self.app(scope, receive, send)
            return
        info = scope.setdefault(SCOPE_KEY, AuditInfo())
        method = scope.get("method", "WS")
        written = False

        async def audited_send(message: dict) -> None:
            nonlocal written
            status = _status_of(message)
            if status is not None and not written:
                written = True
                self.audit.append(method, route_template(scope), status, info)
            await send(message)

        try:
            await self.app(scope, receive, audited_send)
        except Exception:
            if not written:
                self.audit.append(method, route_template(scope), 500, info)
            raise


def _status_of(message: dict) -> int | None:
    kind = message["type"]
    if kind == "http.response.start":
        return int(message["status"])
    if kind == "websocket.accept":
        return 101
    if kind == "websocket.close":
        return 403
    if kind == "websocket.http.response.start":
        return int(message["status"])
    return None
