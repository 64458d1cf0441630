"""Immutable twin versions: what data, model and settings made a forecast.

Every calibration of a twin creates a new :class:`TwinVersion`. It records the
hash of the data it saw, the model and package versions, the settings, the
fitted parameters and posterior summary, and the outputs (forecasts, scores,
grades) so that any forecast can be reproduced and audited. Versions are never
updated in place; a store only appends them.

The ``outputs`` mapping is plain JSON. Its keys are documented in
:data:`OUTPUT_KEYS`; reports and ``--json`` output read only from it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

#: Top-level keys of :attr:`TwinVersion.outputs` and what each holds.
OUTPUT_KEYS = {
    "kinetics": "CAR T kinetics fit and forecast: quantity, unit, status, reason, "
    "n_obs, n_censored, t_days, median, lower, upper, interval, derived "
    "(cmax, tmax, auc0_28 each with median/lower/upper/unit), parameters",
    "scores": "list of score results (name, value, category, inputs, missing, "
    "window, reference)",
    "crs": "ASTCT CRS grade timeline: points (time, study_day, grade, driver, "
    "reasons), daily_max, max_grade, message, notes",
    "icans": "ASTCT ICANS grade timeline, same shape as crs",
    "journey": "patient journey phases with start/end instants and study days",
    "graph": "only with TwinSettings(graph=True): multi-scale model graph fit "
    "status, observable series with intervals, CRS grade probabilities (24/48/72 h), "
    "neutropenia outlook vs CAR-HEMATOTOX, response probabilities, scenarios side "
    "by side, identifiability",
}


@dataclass(frozen=True)
class TwinVersion:
    """One immutable calibration result of one patient's twin.

    Attributes
    ----------
    pseudonym : str
        Keyed hash of the patient's source id.
    created_at : datetime.datetime
        UTC instant the version was made.
    data_hash : str
        SHA-256 of the canonical serialisation of the patient's record.
    model_name : str
        Identifier of the model graph, e.g. ``"multiphasic-kinetics"``.
    model_version : str
        Version of the model definition.
    package_version : str
        cartwin version that made it.
    settings : dict
        Every setting that influenced the result (seed, interval, grid, ...).
    parameters : dict
        Point estimates (MAP) on the natural scale, with units.
    posterior : dict
        Posterior summary (method, mean/cov on the fitting scale, status).
    outputs : dict
        Forecasts, scores and grades; keys in :data:`OUTPUT_KEYS`.
    parent_id : str or None
        ``version_id`` of the version this one updates.
    """

    pseudonym: str
    created_at: dt.datetime
    data_hash: str
    model_name: str
    model_version: str
    package_version: str
    settings: dict[str, Any] = field(default_factory=dict)
    parameters: dict[str, Any] = field(default_factory=dict)
    posterior: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)
    parent_id: str | None = None

    @property
    def version_id(self) -> str:
        """Content hash of the version (16 hex digits); equal content, equal id."""
        data = asdict(self)
        data["created_at"] = self.created_at.isoformat()
        return _content_id(data)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready mapping, ``created_at`` as ISO 8601 text."""
        data = asdict(self)
        data["created_at"] = self.created_at.isoformat()
        data["version_id"] = _content_id(data)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TwinVersion:
        """Inverse of :meth:`to_dict`."""
        data = dict(data)
        data.pop("version_id", None)
        data["created_at"] = dt.datetime.fromisoformat(data["created_at"])
        return cls(**data)


def _content_id(data: dict[str, Any]) -> str:
    payload = {k: v for k, v in data.items() if k != "version_id"}
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
