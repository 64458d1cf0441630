"""FastAPI application factory of the live twin service.

Middleware, outermost first: audit (one row per request, see
:mod:`cartwin.service.audit`), CORS (closed unless origins are configured),
body size limit (413). Authentication, scopes, patient access lists and the
rate limit are dependencies of each route (:mod:`cartwin.service.deps`).

Known limits
------------
* One process, one store connection: every store read and write is
  serialised (:class:`~cartwin.service.stream.StoreGate`); reads of large
  records wait behind the live writer and the other way round.
* Rate limits and the live CRS caches live in the process's memory.
* Streams (SSE) end when the process stops; clients reconnect with
  ``Last-Event-ID``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI

from cartwin import __version__
from cartwin.service import dashboard, routes, routes_stream
from cartwin.service.audit import AuditMiddleware
from cartwin.service.errors import install_error_handlers
from cartwin.service.limits import BodySizeLimitMiddleware, install_cors
from cartwin.service.settings import ServiceSettings
from cartwin.service.state import ServiceState

API_DESCRIPTION = """\
Live virtual twins of patients receiving CAR T-cell therapy.

Patients are named by pseudonym only (keyed hash of the source id, 16 hex
digits); a source id is hashed by the service when sent in the body of
`POST /v1/patients/lookup`, never in a URL. Every request needs a bearer
token (`cartwin token create`) of scope read, write or admin, may be limited
to a list of patients, and is written to the audit log. Errors are JSON:
`{"error": {status, code, message, field, value}, "problems": [...]}`.
"""


def create_app(settings: ServiceSettings | None = None) -> FastAPI:
    """Build the service app; opens the store and the service database now.

    Parameters
    ----------
    settings : ServiceSettings, optional
        Defaults to :meth:`ServiceSettings.from_env`.

    Returns
    -------
    fastapi.FastAPI
        ``app.state.service`` holds the :class:`ServiceState`; call its
        ``close()`` when the app is done with (``cartwin serve`` does).

    Raises
    ------
    KeyMissingError, StoreError
        When the key is missing or wrong, or the store cannot be opened.
    """
    settings = settings or ServiceSettings.from_env()
    state = ServiceState(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await state.start()
        try:
            yield
        finally:
            await state.stop()

    app = FastAPI(
        title="cartwin live twin service",
        version=__version__,
        description=API_DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.service = state
    app.include_router(routes.router)
    app.include_router(routes_stream.router)
    app.include_router(dashboard.router)
    install_error_handlers(app)
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes)
    install_cors(app, settings.cors_origins)
    app.add_middleware(AuditMiddleware, audit=state.audit)
    return app
