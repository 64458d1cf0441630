"""Live twin service: FastAPI app, token security, audit, live vitals and alerts.

Run it with ``cartwin serve`` (see :mod:`cartwin.service.cli`) or build the
app with :func:`create_app`. Modules: :mod:`~cartwin.service.settings`
(typed settings), :mod:`~cartwin.service.auth` (tokens, scopes, access
lists), :mod:`~cartwin.service.audit` (append-only audit log),
:mod:`~cartwin.service.limits` (body size, rate limit, CORS),
:mod:`~cartwin.service.stream` and :mod:`~cartwin.service.crs_live` (live
vital signs, incremental CRS grading, alerts), :mod:`~cartwin.service.routes`
and :mod:`~cartwin.service.routes_stream` (the endpoints).
"""

from __future__ import annotations

from cartwin.service.app import create_app
from cartwin.service.settings import ServiceSettings

__all__ = ["ServiceSettings", "create_app"]
