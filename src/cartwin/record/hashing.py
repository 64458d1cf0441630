"""Canonical serialisation and content hash of a patient record.

The hash identifies exactly the data a twin version saw: two records with the
same facts, observations and events (in any input order) hash equally, and any
changed value, unit, time or flag changes the hash.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import math
from typing import Any

from cartwin.record.model import PatientRecord


def _plain(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.timezone.utc).isoformat()
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    return value


def record_to_dict(record: PatientRecord) -> dict[str, Any]:
    """JSON-ready canonical form of ``record`` (sorted, UTC ISO instants)."""

    def row(item: Any) -> dict[str, Any]:
        return {k: _plain(v) for k, v in dataclasses.asdict(item).items()}

    return {
        "facts": row(record.facts),
        "observations": [row(o) for o in record.observations],
        "events": [row(e) for e in record.events],
        "site_utc_offset_min": record.site_utc_offset_min,
    }


def record_hash(record: PatientRecord) -> str:
    """SHA-256 hex digest of :func:`record_to_dict`."""
    text = json.dumps(record_to_dict(record), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
