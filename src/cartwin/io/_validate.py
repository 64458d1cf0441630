"""Validation of single resources with the ``fhir.resources`` models.

cartwin reads FHIR R4 (4.0.1). ``fhir.resources`` 8 ships models for R5 (the
default package), R4B (4.3.0) and STU3, but not R4. R4B is the closest
release: it is a maintenance release of R4 whose changes are limited to
resources cartwin does not read (medicinal product definitions, evidence,
subscriptions); Patient, Observation, Procedure, Condition, Medication,
MedicationAdministration and MedicationRequest have the same elements and
types in R4 and R4B. So each resource is validated with the R4B model of its
type (``model_validate`` on the parsed dict, one resource at a time), reusing
validated instances of repeated elements (see :class:`ResourceValidator`).

Leniency, stated plainly:

- The narrative (``text``) is removed before validation: cartwin never reads
  it, and narratives without ``div`` are common in real files.
- A ``dateTime`` with a time but no zone fails R4B validation. When the caller
  gives the site's UTC offset, such values are accepted (the resource is
  validated again with the offset filled in); otherwise each is reported as a
  ``timestamp-no-zone`` problem naming the field.
- Only resources of the types the importer reads are validated; any other
  known type is counted and skipped without validation (pass
  ``validate_all=True`` to :func:`cartwin.io.fhir.import_fhir` to validate them
  too). A ``resourceType`` that no FHIR release defines is always an error.
"""

from __future__ import annotations

import copy
import functools
import math
import typing
from dataclasses import dataclass

from fhir.resources import R4B
from fhir.resources.R4B.resource import Resource as R4BResource
from pydantic import ValidationError

from cartwin.io._fhirtime import is_zoneless
from cartwin.io.problems import short_repr

#: Resource types the importer reads (and therefore always validates).
READ_TYPES = frozenset(
    {
        "Patient",
        "Observation",
        "Procedure",
        "Condition",
        "Medication",
        "MedicationAdministration",
        "MedicationRequest",
    }
)
#: Most validated elements kept for reuse during one import.
_CACHE_LIMIT = 100_000
#: Description of the validation release, for reports.
VALIDATION_RELEASE = f"fhir.resources R4B models (FHIR {R4B.__fhir_version__})"


@dataclass(frozen=True)
class Issue:
    """One validation failure inside a resource."""

    code: str
    field: str
    value: str
    message: str


@functools.cache
def model_class(resource_type: str):
    """The R4B model class of ``resource_type``, or ``None`` if unknown."""
    try:
        return R4B.get_fhir_model_class(resource_type)
    except (KeyError, ValueError):
        return None


@dataclass
class _ElementStats:
    """Reuse statistics of one element of one resource type."""

    element: tuple | None  # (model class, is_list) or None when not reusable
    lookups: int = 0
    hits: int = 0

    def worth_caching(self) -> bool:
        return self.element is not None and (
            self.lookups < 64 or 2 * self.hits >= self.lookups
        )


class ResourceValidator:
    """Validates resources one at a time, reusing repeated valid elements.

    In a real file the same ``code``, ``subject`` or ``category`` value
    repeats across thousands of resources. Each distinct value of such a
    complex element is validated once with the R4B model of its type; the
    validated instance is then passed to the resource model, which accepts an
    instance of the right class as it is and still runs every resource-level
    check (required elements, choice types, unknown elements, primitives).
    Elements that fail alone are left as plain JSON, so their errors are
    reported by the resource model at their full path. An element is cached
    only while at least half of its lookups hit (after 64 lookups), so unique
    values such as ``valueQuantity`` do not fill memory.

    Parameters
    ----------
    site_utc_offset_min : int or None
        When given, zone-less date-times are accepted (see module docstring).
    """

    def __init__(self, *, site_utc_offset_min: int | None) -> None:
        self.site_utc_offset_min = site_utc_offset_min
        self._cache: dict[tuple, object] = {}
        self._stats: dict[tuple, _ElementStats] = {}

    def issues(self, resource: dict) -> list[Issue]:
        """Validate one resource (known ``resourceType``); return its issues."""
        body = resource
        if "text" in resource:
            body = {k: v for k, v in resource.items() if k != "text"}
        cls = model_class(resource["resourceType"])
        try:
            cls.model_validate(self._with_cached_elements(cls, body))
            return []
        except ValidationError as exc:
            issues = [_issue(err) for err in exc.errors(include_url=False)]
            errors = exc.errors(include_url=False)
        zoneless = [i for i in issues if i.code == "timestamp-no-zone"]
        if self.site_utc_offset_min is None or len(zoneless) < len(issues):
            return issues
        return _revalidate_with_zone(body, errors, self.site_utc_offset_min)

    def _with_cached_elements(self, cls, body: dict) -> dict:
        substitutes = {}
        for key, value in body.items():
            if not isinstance(value, (dict, list)) or not value:
                continue
            stats = self._stats.get((cls, key))
            if stats is None:
                stats = self._stats[(cls, key)] = _ElementStats(
                    _element_class(cls, key)
                )
            if not stats.worth_caching():
                continue
            instance = self._element(stats, value)
            if instance is not None:
                substitutes[key] = instance
        return {**body, **substitutes} if substitutes else body

    def _element(self, stats: _ElementStats, value):
        klass, is_list = stats.element
        key = (klass, repr(value))
        stats.lookups += 1
        instance = self._cache.get(key)
        if instance is not None:
            stats.hits += 1
            return instance
        try:
            if is_list:
                instance = [klass.model_validate(item) for item in value]
            else:
                instance = klass.model_validate(value)
        except (ValidationError, TypeError, ValueError):
            return None
        if len(self._cache) < _CACHE_LIMIT:
            self._cache[key] = instance
        return instance


def _element_class(cls, key: str):
    """``(model class, is_list)`` of a complex, non-resource element, else None."""
    field = cls.model_fields.get(key)
    if field is None or field.alias not in (None, key):
        return None
    for candidate in typing.get_args(field.annotation) or (field.annotation,):
        is_list = typing.get_origin(candidate) is list
        inner = typing.get_args(candidate)[0] if is_list else candidate
        if hasattr(inner, "get_model_klass"):
            klass = inner.get_model_klass()
            if issubclass(klass, R4BResource):
                return None
            return klass, is_list
    return None


def _revalidate_with_zone(body: dict, errors: list, offset_min: int):
    patched = copy.deepcopy(body)
    sign = "+" if offset_min >= 0 else "-"
    hours, minutes = divmod(abs(offset_min), 60)
    suffix = f"{sign}{hours:02d}:{minutes:02d}"
    for err in errors:
        _set_at(patched, err["loc"], err["input"] + suffix)
    try:
        model_class(body["resourceType"]).model_validate(patched)
        return []
    except ValidationError as again:
        return [_issue(err) for err in again.errors(include_url=False)]


def _set_at(document, loc: tuple, value) -> None:
    target = document
    for key in loc[:-1]:
        target = target[key]
    target[loc[-1]] = value


def _issue(err: dict) -> Issue:
    field = field_path(err["loc"])
    value = err.get("input")
    message = str(err["msg"]).removeprefix("Value error, ")
    if is_zoneless(value) and "spec regex" in message:
        message = (
            "has a time but no UTC offset; add it, or give the site zone "
            "(--site-utc-offset MINUTES, or site_utc_offset_min in Python)"
        )
        return Issue("timestamp-no-zone", field, short_repr(value), message)
    if isinstance(value, float) and not math.isfinite(value):
        return Issue("non-finite", field, short_repr(value), "is not a finite number")
    shown = "" if "missing" in str(err.get("type", "")) else short_repr(value)
    return Issue("invalid", field, shown, message)


def field_path(loc: tuple) -> str:
    """FHIR-style element path: ``component[0].valueQuantity.unit``."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path
