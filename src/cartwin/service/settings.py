"""Typed settings of the live twin service, with environment overrides.

Every field has a type, a default, a constraint and a one-line description
(shown by ``ServiceSettings.model_json_schema()``). :meth:`ServiceSettings.
from_env` reads overrides from ``CARTWIN_SERVICE_<FIELD>`` variables (upper
case; tuples as comma-separated text) and the store from ``CARTWIN_STORE``.

The service binds to loopback (``127.0.0.1``) unless told otherwise, sends no
CORS headers unless origins are listed, and keeps tokens, the audit log and
alerts in a SQLite file of its own (see :mod:`cartwin.service.db` for why).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretBytes

from cartwin.errors import CartwinError

#: Prefix of the environment variables that override settings.
ENV_PREFIX = "CARTWIN_SERVICE_"
#: Name of the security database next to a DuckDB store (``<store>`` + this).
SECURITY_DB_SUFFIX = ".service.sqlite3"
#: Security database used when the store is a PostgreSQL URL or in memory.
DEFAULT_SECURITY_DB = "cartwin-service.sqlite3"


class SettingsError(CartwinError):
    """A service setting has a value that is not allowed."""


class ServiceSettings(BaseModel):
    """Settings of one service process (immutable).

    Examples
    --------
    >>> ServiceSettings(store="/data/site.duckdb").security_db_path()
    '/data/site.duckdb.service.sqlite3'
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    store: str | None = Field(
        None,
        description="Twin store: DuckDB file or postgresql:// URL "
        "(default: $CARTWIN_STORE or ./cartwin.duckdb).",
    )
    host: str = Field("127.0.0.1", min_length=1, description="Address to bind.")
    port: int = Field(8787, ge=0, le=65535, description="TCP port (0: any free).")
    security_db: str | None = Field(
        None,
        description="SQLite file of tokens, audit log and alerts (default: next "
        "to a DuckDB store, else ./cartwin-service.sqlite3).",
    )
    pseudonym_key: SecretBytes | None = Field(
        None,
        description="Pseudonymisation key (default: CARTWIN_PSEUDONYM_KEY or "
        "CARTWIN_PSEUDONYM_KEY_FILE, read at start).",
    )
    site_utc_offset_min: int | None = Field(
        None,
        ge=-840,
        le=840,
        description="Site UTC offset in minutes for FHIR times without zone.",
    )
    max_body_bytes: int = Field(
        16 * 1024 * 1024, ge=1024, description="Largest request body accepted (bytes)."
    )
    rate_limit_per_second: float = Field(
        50.0, gt=0, description="Sustained requests per second allowed per token."
    )
    rate_limit_burst: int = Field(
        200, ge=1, description="Requests a token may make at once (bucket size)."
    )
    cors_origins: tuple[str, ...] = Field(
        (), description="Origins allowed by CORS; empty: CORS closed (default)."
    )
    ingest_batch_max: int = Field(
        2000, ge=1, le=100_000, description="Most vitals written in one commit."
    )
    live_cache_patients: int = Field(
        5000, ge=1, description="Patients kept in the live CRS cache (LRU)."
    )
    sse_keepalive_seconds: float = Field(
        15.0, gt=0, le=300, description="Seconds between SSE keep-alive comments."
    )
    subscriber_queue_max: int = Field(
        1000, ge=1, description="Alerts buffered per SSE subscriber before it is cut."
    )

    def security_db_path(self) -> str:
        """Where the SQLite file of tokens, audit log and alerts lives."""
        if self.security_db:
            return self.security_db
        store = self.store or os.environ.get("CARTWIN_STORE") or "cartwin.duckdb"
        if store == ":memory:":
            return ":memory:"
        if is_url(store):
            return DEFAULT_SECURITY_DB
        return str(Path(store).expanduser()) + SECURITY_DB_SUFFIX

    def key_bytes(self) -> bytes:
        """The pseudonymisation key: this setting, else the environment.

        Raises
        ------
        KeyMissingError
            When neither the setting nor the environment gives a key.
        """
        from cartwin.record.pseudonym import load_key

        if self.pseudonym_key is not None:
            return self.pseudonym_key.get_secret_value()
        return load_key()

    @classmethod
    def from_env(cls, **overrides: Any) -> ServiceSettings:
        """Settings from ``CARTWIN_SERVICE_*`` variables, then ``overrides``.

        ``overrides`` whose value is ``None`` are ignored, so CLI options left
        unset keep the environment's value.

        Raises
        ------
        SettingsError
            When a value is not allowed; names the variable or field and value.
        """
        values: dict[str, Any] = {}
        for name, field in cls.model_fields.items():
            text = os.environ.get(ENV_PREFIX + name.upper())
            if text is None:
                continue
            values[name] = _parse_env(text, field.annotation)
        if "store" not in values and os.environ.get("CARTWIN_STORE"):
            values["store"] = os.environ["CARTWIN_STORE"]
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls(**values)
        except ValueError as exc:
            raise SettingsError(f"invalid service settings: {exc}") from None


def is_url(store: str) -> bool:
    """Whether ``store`` names a database server rather than a file."""
    return str(store).startswith(("postgresql://", "postgres://"))


def _parse_env(text: str, annotation: Any) -> Any:
    if "tuple" in str(annotation):
        return tuple(part.strip() for part in text.split(",") if part.strip())
    if "SecretBytes" in str(annotation):
        return text.encode("utf-8")
    return text
