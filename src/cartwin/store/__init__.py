"""TwinStore: pseudonymised patient data and twin versions in DuckDB.

The store's tables follow the OMOP CDM v5.4 (see :mod:`cartwin.store.schema`);
:func:`open_store` opens or creates one (see :mod:`cartwin.store.duck` for
where the file lives).
"""

from __future__ import annotations

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
    "TwinStore",
    "open_store",
    "resolve_store_path",
]
