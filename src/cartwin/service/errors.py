"""JSON error responses: one shape, naming the field and the value.

Every error is ``{"error": {status, code, message, field, value},
"problems": [...]}``. Values that may be patient identifiers (a path segment
or ``source_id`` that is not a pseudonym) are never echoed; the message says
so instead. Unexpected exceptions give a 500 without internals.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from cartwin.errors import CartwinError, DataError
from cartwin.io.problems import short_repr
from cartwin.record.pseudonym import looks_like_pseudonym

logger = logging.getLogger(__name__)

#: Fields whose values may identify a patient; shown only when pseudonyms.
_IDENTIFYING = ("pseudonym", "patient", "source_id")
WITHHELD = "(withheld: not a pseudonym, may identify a patient)"


class ApiError(Exception):
    """An error answered to the client as JSON.

    Parameters
    ----------
    status : int
        HTTP status.
    code : str
        Stable problem code.
    message : str
        What is wrong and what is allowed.
    field, value : str, optional
        Where the problem is and the value received.
    problems : iterable of dict, optional
        Every problem, when there are several.
    headers : dict, optional
        Extra response headers (``Retry-After``, ``WWW-Authenticate``).
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        field: str | None = None,
        value: Any = None,
        problems: Iterable[dict] = (),
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.detail = {
            "status": status,
            "code": code,
            "message": message,
            "field": field,
            "value": None if value is None else str(value),
        }
        self.problems = list(problems)
        self.headers = headers


def error_response(
    status: int, detail: dict, problems: list[dict] | None = None, headers=None
) -> JSONResponse:
    """The JSON response of one error."""
    body = {"error": detail, "problems": problems or []}
    return JSONResponse(body, status_code=status, headers=headers)


def safe_value(field: str, value: Any) -> str:
    """``value`` as shown in an error: withheld when it may identify a patient."""
    text = value if isinstance(value, str) else short_repr(value)
    if any(name in field for name in _IDENTIFYING) and not (
        isinstance(value, str) and looks_like_pseudonym(value)
    ):
        return WITHHELD
    return text if len(text) <= 80 else text[:77] + "..."


def _validation_problems(exc: RequestValidationError) -> list[dict]:
    problems = []
    for err in exc.errors():
        field = ".".join(str(part) for part in err.get("loc", ()))
        value = err.get("input")
        problems.append({
            "status": 422,
            "code": str(err.get("type", "invalid")),
            "message": str(err.get("msg", "invalid value")),
            "field": field,
            "value": None if value is None else safe_value(field, value),
        })  # fmt: skip
    return problems


def install_error_handlers(app: FastAPI) -> None:
    """Answer every error as JSON in the shape of ``ErrorResponse``."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.detail, exc.problems, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = _validation_problems(exc)
        first = dict(problems[0]) if problems else {
            "status": 422, "code": "invalid", "message": "invalid request",
            "field": None, "value": None,
        }  # fmt: skip
        if first["field"]:
            first["message"] = f"{first['field']}: {first['message']}"
        return error_response(422, first, problems)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not-found", 405: "method-not-allowed"}.get(
            exc.status_code, "http"
        )
        detail = {
            "status": exc.status_code,
            "code": code,
            "message": str(exc.detail),
            "field": None,
            "value": None,
        }
        return error_response(exc.status_code, detail, None, exc.headers)

    @app.exception_handler(DataError)
    async def _data(request: Request, exc: DataError) -> JSONResponse:
        detail = {
            "status": 422,
            "code": "invalid-data",
            "message": str(exc),
            "field": None,
            "value": None,
        }
        return error_response(422, detail)

    @app.exception_handler(CartwinError)
    async def _cartwin(request: Request, exc: CartwinError) -> JSONResponse:
        logger.error("request failed: %s", type(exc).__name__)
        detail = {
            "status": 503,
            "code": "unavailable",
            "message": f"{type(exc).__name__}: the store could not serve the "
            "request; see the service log",
            "field": None,
            "value": None,
        }
        return error_response(503, detail)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # The type only: messages may quote client values (see module notes).
        route = getattr(request.scope.get("route"), "path", "(no route)")
        logger.error("unexpected %s in %s", type(exc).__name__, route)
        logger.debug("traceback", exc_info=exc)
        detail = {
            "status": 500,
            "code": "internal",
            "message": "internal error; see the service log",
            "field": None,
            "value": None,
        }
        return error_response(500, detail)
