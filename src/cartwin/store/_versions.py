"""Rows of the ``twin_version`` table and back.

The JSON columns hold ``json.dumps(..., sort_keys=True, default=str)``, the
same serialisation :attr:`TwinVersion.version_id` hashes, so a version read
back has the id it was saved under. Non-finite floats are written as the
``NaN``/``Infinity`` tokens Python and DuckDB accept (strict JSON parsers do
not). ``created_at`` keeps its UTC offset in ``created_at_utc_offset_min``, so
its ISO text, and with it the version id, is reproduced.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, Sequence

from cartwin.errors import StoreError
from cartwin.store._columns import from_epoch_us
from cartwin.twin.version import TwinVersion

_JSON_FIELDS = ("settings", "parameters", "posterior", "outputs")

#: ``twin_version`` columns read by :func:`version_from_row`, in order.
VERSION_COLUMNS = (
    "version_id, pseudonym, epoch_us(created_at), created_at_utc_offset_min, "
    "data_hash, model_name, model_version, package_version, settings, "
    "parameters, posterior, outputs, parent_id"
)


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def check_storable(version: TwinVersion) -> None:
    """Check that ``version`` reads back under the same id.

    Raises
    ------
    StoreError
        When ``created_at`` is naive or its offset is not whole minutes, or
        when a JSON field does not survive a JSON round trip with its hash
        intact (e.g. non-string dict keys, which JSON turns into strings and
        sorts differently).
    """
    vid = version.version_id
    offset = version.created_at.utcoffset()
    if offset is None or offset % dt.timedelta(minutes=1):
        raise StoreError(
            f"twin version {vid} of patient {version.pseudonym}: created_at "
            f"{version.created_at.isoformat()} needs a time zone offset in whole "
            "minutes"
        )
    reloaded = {
        name: json.loads(_dumps(getattr(version, name))) for name in _JSON_FIELDS
    }
    again = TwinVersion(**{**_plain_fields(version), **reloaded})
    if again.version_id != vid:
        raise StoreError(
            f"twin version {vid} of patient {version.pseudonym}: settings, "
            "parameters, posterior or outputs are not plain JSON (string keys, "
            "lists, numbers, strings), so the stored copy would not keep its id"
        )


def _plain_fields(version: TwinVersion) -> dict[str, Any]:
    return {
        "pseudonym": version.pseudonym,
        "created_at": version.created_at,
        "data_hash": version.data_hash,
        "model_name": version.model_name,
        "model_version": version.model_version,
        "package_version": version.package_version,
        "parent_id": version.parent_id,
    }


def version_row(version: TwinVersion, seq: int, person: int) -> list:
    """Values of one ``twin_version`` row, in ``INSERT_VERSION`` order."""
    offset = version.created_at.utcoffset() // dt.timedelta(minutes=1)
    return [
        version.version_id, seq, version.pseudonym, person,
        version.created_at.astimezone(dt.timezone.utc), offset, version.data_hash,
        version.model_name, version.model_version, version.package_version,
        *(_dumps(getattr(version, name)) for name in _JSON_FIELDS),
        version.parent_id,
    ]  # fmt: skip


#: Parameterised insert matching :func:`version_row`.
INSERT_VERSION = (
    "INSERT INTO twin_version (version_id, seq, pseudonym, person_id, created_at, "
    "created_at_utc_offset_min, data_hash, model_name, model_version, "
    "package_version, settings, parameters, posterior, outputs, parent_id) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def version_from_row(row: Sequence, path: str) -> TwinVersion:
    """TwinVersion from a row of ``VERSION_COLUMNS``; checks the stored id.

    Raises
    ------
    StoreError
        When the row no longer hashes to its ``version_id`` (edited by hand).
    """
    vid, pseudonym, micros, offset, data_hash, model, model_version = row[:7]
    zone = dt.timezone(dt.timedelta(minutes=offset)) if offset else dt.timezone.utc
    version = TwinVersion(
        pseudonym=pseudonym,
        created_at=from_epoch_us(micros).astimezone(zone),
        data_hash=data_hash,
        model_name=model,
        model_version=model_version,
        package_version=row[7],
        **{name: json.loads(text) for name, text in zip(_JSON_FIELDS, row[8:12])},
        parent_id=row[12],
    )
    if version.version_id != vid:
        raise StoreError(
            f"twin version {vid} in store {path} does not hash to its id "
            f"(it hashes to {version.version_id}); the row was changed outside cartwin"
        )
    return version
