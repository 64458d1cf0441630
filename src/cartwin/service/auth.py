"""Bearer tokens with scopes and per-patient access lists.

A token is ``cwt_<token id>_<secret>``: the id (8 hex digits) is public and
names the token in the audit log and ``cartwin token list``; the secret is 32
random bytes (URL-safe base64). Only the SHA-256 of the whole token is stored
(:mod:`cartwin.service.db`), so the token is shown once, at creation, and
cannot be read back. A 256-bit random secret needs no salt or slow hash: it
cannot be guessed, and its hash reveals nothing.

Scopes are ordered: ``read`` < ``write`` < ``admin``; a token may do what its
scope and every lower scope allow. A ``read`` or ``write`` token may carry an
access list of patient pseudonyms; it then sees only those patients. A token
without a list sees every patient. ``admin`` tokens are never restricted.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from cartwin.errors import CartwinError
from cartwin.record.pseudonym import looks_like_pseudonym
from cartwin.service.db import ServiceDB

#: Prefix of every token, so leaked tokens can be found by secret scanners.
TOKEN_PREFIX = "cwt"


class AuthError(CartwinError):
    """A token cannot be created, found or revoked as asked."""


class Scope(enum.StrEnum):
    """What a token may do; each scope includes those below it."""

    READ = "read"
    WRITE = "write"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        """0 for read, 1 for write, 2 for admin."""
        return list(Scope).index(self)

    def allows(self, needed: Scope) -> bool:
        """Whether a token of this scope may do what ``needed`` requires."""
        return self.rank >= needed.rank


@dataclass(frozen=True)
class Principal:
    """The authenticated caller of one request.

    Attributes
    ----------
    token_id : str
        Public id of the token (8 hex digits).
    scope : Scope
        The token's scope.
    patients : frozenset of str or None
        Pseudonyms the token may see; ``None`` means every patient.
    """

    token_id: str
    scope: Scope
    patients: frozenset[str] | None = None

    def may_see(self, pseudonym: str) -> bool:
        """Whether the access list (if any) includes ``pseudonym``."""
        return self.patients is None or pseudonym in self.patients


@dataclass(frozen=True)
class TokenInfo:
    """A stored token as ``cartwin token list`` shows it (no secret, no hash)."""

    token_id: str
    scope: str
    label: str
    created_at: str
    revoked_at: str | None
    patients: tuple[str, ...]


def hash_token(token: str) -> str:
    """SHA-256 hex digest of a token, as stored."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class TokenRegistry:
    """Create, list, revoke and check tokens in the service database."""

    def __init__(self, db: ServiceDB) -> None:
        self.db = db

    def create(
        self,
        scope: Scope | str,
        *,
        patients: Iterable[str] = (),
        label: str = "",
    ) -> tuple[str, TokenInfo]:
        """Make a token; return it (shown once) and what is stored about it.

        Parameters
        ----------
        scope : Scope or str
            ``"read"``, ``"write"`` or ``"admin"``.
        patients : iterable of str
            Pseudonyms (16 hex digits) the token is limited to; empty for all.
        label : str
            Free text for ``token list`` (up to 200 characters); put no
            patient identifier in it.

        Raises
        ------
        AuthError
            For an unknown scope, a patient that is not a pseudonym, an
            access list on an admin token, or a label over 200 characters.
        """
        scope = _scope(scope)
        patients = tuple(sorted(set(patients)))
        _check_patients(scope, patients)
        if len(label) > 200:
            raise AuthError(f"label has {len(label)} characters; at most 200")
        token_id = secrets.token_hex(4)
        token = f"{TOKEN_PREFIX}_{token_id}_{secrets.token_urlsafe(32)}"
        created = _now()
        with self.db.transaction() as con:
            con.execute(
                "INSERT INTO service_token VALUES (?, ?, ?, ?, ?, NULL)",
                [token_id, hash_token(token), scope.value, label, created],
            )
            con.executemany(
                "INSERT INTO service_token_patient VALUES (?, ?)",
                [(token_id, p) for p in patients],
            )
        return token, TokenInfo(token_id, scope.value, label, created, None, patients)

    def authenticate(self, token: str) -> Principal | None:
        """The principal of a valid, unrevoked token; ``None`` otherwise."""
        if not token.startswith(TOKEN_PREFIX + "_") or len(token) > 200:
            return None
        rows = self.db.query(
            "SELECT t.token_id, t.scope, p.pseudonym FROM service_token t "
            "LEFT JOIN service_token_patient p USING (token_id) "
            "WHERE t.token_sha256 = ? AND t.revoked_at IS NULL",
            [hash_token(token)],
        )
        if not rows:
            return None
        patients = frozenset(row[2] for row in rows if row[2] is not None)
        return Principal(rows[0][0], Scope(rows[0][1]), patients or None)

    def revoke(self, token_id: str) -> TokenInfo:
        """Mark a token revoked (it stays listed); return it.

        Raises
        ------
        AuthError
            When no token has this id, or it is revoked already.
        """
        with self.db.transaction() as con:
            done = con.execute(
                "UPDATE service_token SET revoked_at = ? "
                "WHERE token_id = ? AND revoked_at IS NULL",
                [_now(), token_id],
            ).rowcount
        if not done:
            known = {info.token_id: info for info in self.list()}
            state = "is revoked already" if token_id in known else "does not exist"
            raise AuthError(
                f"token {token_id!r} {state}; see `cartwin token list` for token ids"
            )
        return next(info for info in self.list() if info.token_id == token_id)

    def list(self) -> list[TokenInfo]:
        """Every token ever made, oldest first."""
        rows = self.db.query(
            "SELECT t.token_id, t.scope, t.label, t.created_at, t.revoked_at, "
            "group_concat(p.pseudonym) FROM service_token t "
            "LEFT JOIN service_token_patient p USING (token_id) "
            "GROUP BY t.token_id ORDER BY t.created_at, t.token_id"
        )
        return [
            TokenInfo(*row[:5], tuple(sorted(row[5].split(","))) if row[5] else ())
            for row in rows
        ]


def _scope(scope: Scope | str) -> Scope:
    try:
        return Scope(scope)
    except ValueError:
        allowed = ", ".join(s.value for s in Scope)
        raise AuthError(f"scope {scope!r} is not one of {allowed}") from None


def _check_patients(scope: Scope, patients: tuple[str, ...]) -> None:
    if patients and scope is Scope.ADMIN:
        raise AuthError("an admin token sees every patient; give no --patient")
    for pseudonym in patients:
        if not looks_like_pseudonym(pseudonym):
            raise AuthError(
                "a token's access list holds pseudonyms (16 hex digits); hash "
                "source ids with the pseudonymisation key first"
            )


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")
