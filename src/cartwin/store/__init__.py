"""TwinStore: pseudonymised patient data and twin versions in DuckDB or PostgreSQL.

The store's tables follow the OMOP CDM v5.4 (see :mod:`cartwin.store.schema`);
:func:`open_store` opens or creates one: a DuckDB file by default (see
:mod:`cartwin.store.duck` for where it lives), or a PostgreSQL database when
given a ``postgresql://`` URL (see :mod:`cartwin.store.postgres`).
"""

from __future__ import annotations

from cartwin.store._pg_url import is_postgres_url
from cartwin.store.duck import (
    DEFAULT_STORE,
    STORE_ENV,
    ImportSummary,
    PersonSummary,
    TwinStore,
    open_store,
    resolve_store_path,
)
from cartwin.store.schema import SCHEMA_VERSION

__all__ = [
    "DEFAULT_STORE",
    "SCHEMA_VERSION",
    "STORE_ENV",
    "ImportSummary",
    "PersonSummary",
    "PostgresTwinStore",
    "TwinStore",
    "is_postgres_url",
    "open_store",
    "resolve_store_path",
]


def __getattr__(name: str):
    # PostgresTwinStore is imported on first use, so that DuckDB-only use of
    # the store does not import psycopg.
    if name == "PostgresTwinStore":
        from cartwin.store.postgres import PostgresTwinStore

        return PostgresTwinStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
