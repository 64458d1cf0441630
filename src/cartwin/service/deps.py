"""FastAPI dependencies: the service state, authentication, scopes, patient ACL.

Order of checks for a request: a bearer token must be present (401) and valid
(401); the token's rate limit must allow it (429); its scope must cover the
route (403); for a patient route, the token's access list must include the
patient (403, audited as denied) before the patient is even looked up, so a
restricted token cannot probe which pseudonyms exist.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Path, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from cartwin.service.audit import SCOPE_KEY, AuditInfo
from cartwin.service.auth import Principal, Scope
from cartwin.service.errors import ApiError
from cartwin.service.limits import retry_after_header
from cartwin.service.state import ServiceState

bearer = HTTPBearer(
    auto_error=False,
    description="Token made by `cartwin token create` (shown once).",
)

#: The patient path parameter: a pseudonym, never a source id.
PseudonymPath = Annotated[
    str,
    Path(
        pattern=r"^[0-9a-f]{16}$",
        description="Patient pseudonym (16 hex digits). Source ids never go in "
        "URLs: look them up with POST /v1/patients/lookup.",
    ),
]


def service(request: Request) -> ServiceState:
    """The :class:`ServiceState` of the app serving ``request``."""
    return request.app.state.service


def audit_info(request: Request) -> AuditInfo:
    """The audit record of ``request`` (filled by the handlers)."""
    info = request.scope.get(SCOPE_KEY)
    if info is None:
        info = request.scope[SCOPE_KEY] = AuditInfo()
    return info


def authenticate(state: ServiceState, token: str | None, info: AuditInfo) -> Principal:
    """The principal of ``token``, rate-limited.

    Raises
    ------
    ApiError
        401 without a valid token; 429 over the rate limit.
    """
    challenge = {"WWW-Authenticate": "Bearer"}
    if not token:
        raise ApiError(
            401, "unauthenticated",
            "no bearer token: send 'Authorization: Bearer <token>' with a token "
            "made by `cartwin token create`",
            field="header.Authorization", headers=challenge,
        )  # fmt: skip
    principal = state.tokens.authenticate(token)
    if principal is None:
        raise ApiError(
            401, "invalid-token", "the bearer token is unknown or revoked",
            field="header.Authorization", value="(token not shown)", headers=challenge,
        )  # fmt: skip
    info.token_id = principal.token_id
    wait = state.limiter.acquire(principal.token_id)
    if wait > 0:
        limit = state.settings.rate_limit_per_second
        raise ApiError(
            429, "rate-limited",
            f"token {principal.token_id} is over its rate limit of {limit:g} "
            f"requests/s; retry after {wait:.2f} s",
            headers={"Retry-After": retry_after_header(wait)},
        )  # fmt: skip
    return principal


def check_scope(principal: Principal, needed: Scope) -> None:
    """Refuse (403) a token whose scope does not cover ``needed``."""
    if not principal.scope.allows(needed):
        raise ApiError(
            403, "insufficient-scope",
            f"token {principal.token_id} has scope {principal.scope.value!r}; "
            f"this needs {needed.value!r} or higher",
            field="header.Authorization",
        )  # fmt: skip


def check_patient(principal: Principal, pseudonym: str, info: AuditInfo) -> None:
    """Refuse (403, audited) a patient outside the token's access list."""
    info.pseudonym = pseudonym
    if not principal.may_see(pseudonym):
        info.outcome = "denied: patient not in the token's access list"
        raise ApiError(
            403, "patient-forbidden",
            f"token {principal.token_id} may not access patient {pseudonym}",
            field="path.pseudonym", value=pseudonym,
        )  # fmt: skip


def require(needed: Scope) -> Callable[..., Principal]:
    """Dependency: an authenticated principal whose scope covers ``needed``."""

    def dependency(
        request: Request,
        credentials: HTTPAuthorizationCredentials | None = Security(bearer),
    ) -> Principal:
        token = credentials.credentials if credentials is not None else None
        principal = authenticate(service(request), token, audit_info(request))
        check_scope(principal, needed)
        return principal

    return dependency


def patient(needed: Scope) -> Callable[..., tuple[Principal, str]]:
    """Dependency: principal and path pseudonym, scope and access list checked."""

    def dependency(
        request: Request,
        pseudonym: PseudonymPath,
        principal: Principal = Depends(require(needed)),
    ) -> tuple[Principal, str]:
        check_patient(principal, pseudonym, audit_info(request))
        return principal, pseudonym

    return dependency
