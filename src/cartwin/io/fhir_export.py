"""Twin outputs as a FHIR R4 transaction Bundle: risks, derived values, provenance.

:func:`export_fhir` turns one :class:`~cartwin.twin.version.TwinVersion` into a
Bundle of type ``transaction`` that a FHIR server can apply in one go. Every
resource is validated with the ``fhir.resources`` R4B models (the release
closest to R4 the package ships; the resources written here have the same
elements in R4 and R4B, see :mod:`cartwin.io._validate`).

What the Bundle holds
---------------------
- ``Patient``: only ``identifier`` = the pseudonym (system
  :data:`PSEUDONYM_SYSTEM`) and ``gender``. No name, birth date, address or
  source identifier is ever written.
- ``Device``: the cartwin software (package and model versions), the agent of
  the Provenance.
- Per score of ``outputs["scores"]`` (CAR-HEMATOTOX, EASIX, m-EASIX, ... at
  each time point): an ``Observation`` with the score value (or a
  ``dataAbsentReason`` and the reason it is missing) and a ``RiskAssessment``
  whose ``basis`` is that Observation and the source Observations of its
  inputs; where a published cut-off gives a risk group, ``prediction``
  carries ``qualitativeRisk`` ``low`` / ``high`` (code system
  ``risk-probability``).
- The CAR T kinetics forecast: one ``Observation`` per derived value (Cmax,
  Tmax, AUC0-28) with ``valueQuantity`` = posterior median in UCUM and
  **``referenceRange`` low / high = the forecast interval** (90 % by default;
  ``referenceRange.type.text`` and ``text`` say so). This is a cartwin
  convention: FHIR R4 has no element for a prediction interval of a derived
  value, and ``referenceRange`` is the element a receiving system displays
  next to the value. The ``RiskAssessment`` of the forecast has one
  ``prediction`` per derived value (``outcome``, ``whenPeriod``, and the
  median and interval in ``rationale``) and these Observations as ``basis``.
  The forecast gives quantiles, not event probabilities, so no
  ``probability[x]`` is written.
- ``Observation`` of the maximum ASTCT CRS grade and of the maximum ICANS
  grade (``valueInteger``).
- One ``Provenance`` for the twin version: ``target`` = every resource above,
  ``agent`` = the Device, ``entity`` = the twin version id, the SHA-256 of the
  input data (role ``source``), the parent version (role ``revision``) and the
  source Observations (role ``source``).

Transaction rules
-----------------
Each entry has ``fullUrl`` ``urn:uuid:<uuid5>``, a UUID derived from the twin
version id and the entry's role, so the same version always gives the same
Bundle. Entries are ``POST`` with ``ifNoneExist`` on their ``identifier``
(system :data:`OUTPUT_SYSTEM`, value ``<version id>/<role>``), which makes a
repeated upload create nothing new; Provenance has no identifier in R4 and is
posted plainly. References between entries use the ``urn:uuid`` full URLs.
Source Observations (score inputs with source id ``Observation/<id>`` and the
CAR T measurements) are **conditional references** ``Observation?_id=<id>``:
the server resolves them in the transaction and rejects the whole Bundle when
one is not found, so pass ``source_references=False`` when the receiving
server does not hold the source data. Source ids of another form
(phenopacket or OMOP locations) are not referenced.

References
----------
HL7 FHIR R4 (4.0.1), RESTful API, transaction processing rules and
conditional references. https://hl7.org/fhir/R4/http.html#trules
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Iterable
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from cartwin.errors import DataError
from cartwin.record.model import PatientRecord
from cartwin.twin.version import TwinVersion

#: Identifier system of patient pseudonyms.
PSEUDONYM_SYSTEM = "https://cartwin.org/fhir/pseudonym"
#: Identifier system of exported resources (value ``<version id>/<role>``).
OUTPUT_SYSTEM = "https://cartwin.org/fhir/twin-output"
#: Identifier system of twin versions.
VERSION_SYSTEM = "https://cartwin.org/fhir/twin-version"
#: Identifier system of input data hashes (SHA-256 of the canonical record).
DATA_HASH_SYSTEM = "https://cartwin.org/fhir/data-sha256"
#: Identifier system of the software Device.
SOFTWARE_SYSTEM = "https://cartwin.org/fhir/software"
#: Code system of cartwin's outputs (scores, derived values, grades).
OUTPUT_CODES = "https://cartwin.org/fhir/CodeSystem/twin-output"
UCUM = "http://unitsofmeasure.org"
RISK_PROBABILITY = "http://terminology.hl7.org/CodeSystem/risk-probability"
DATA_ABSENT = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
DATA_OPERATION = "http://terminology.hl7.org/CodeSystem/v3-DataOperation"
PARTICIPANT_TYPE = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
_UUID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://cartwin.org/fhir/twin")

#: Outcome each score predicts (clinical-facts.md sections 1 and 2).
SCORE_OUTCOMES = {
    "CAR-HEMATOTOX": "severe neutropenia (ANC < 500/uL) for 14 days or longer "
    "(CAR T hematotoxicity; Rejeski 2021, doi:10.1182/blood.2020010543)",
    "EASIX": "grade >= 3 CRS and/or ICANS (Korell 2022, doi:10.3389/fimmu.2022.877477)",
    "m-EASIX": "grade >= 3 CRS (Pennisi 2021, doi:10.1182/bloodadvances.2020003885)",
    "simplified EASIX": "grade >= 3 CRS and/or ICANS "
    "(Pennisi 2021, doi:10.1182/bloodadvances.2020003885)",
}
_DERIVED = {
    "cmax": "peak CAR T level (Cmax)",
    "tmax": "time to peak CAR T level (Tmax)",
    "auc0_28": "CAR T exposure, area under the curve day 0-28 (AUC0-28)",
}
_AUC_END_DAYS = 28.0


def export_fhir(
    record: PatientRecord,
    version: TwinVersion,
    *,
    source_references: bool = True,
) -> dict:
    """One twin version as a FHIR R4 transaction Bundle (JSON dict).

    Parameters
    ----------
    record : PatientRecord
        The patient's data (infusion time and CAR T source observations).
    version : TwinVersion
        The twin version to export; must be of the same patient.
    source_references : bool
        Reference source Observations conditionally (``Observation?_id=...``);
        see the module docstring for when to turn this off.

    Returns
    -------
    dict
        The Bundle; every resource and the Bundle are validated.

    Raises
    ------
    DataError
        When ``version`` is of another patient, or a resource fails
        validation (the message names the resource and the field).
    """
    if version.pseudonym != record.facts.pseudonym:
        raise DataError(
            f"twin version {version.version_id} is of patient "
            f"{version.pseudonym}, not {record.facts.pseudonym}"
        )
    bundle = _Bundle(version, source_references)
    bundle.patient(record)
    bundle.device()
    for index, score in enumerate(version.outputs.get("scores") or ()):
        bundle.score(index, score)
    bundle.forecast(record)
    for which in ("crs", "icans"):
        bundle.grade(which, version.outputs.get(which) or {})
    bundle.provenance()
    return bundle.validated()


class _Bundle:
    """Entries of one export, with their deterministic full URLs."""

    def __init__(self, version: TwinVersion, source_references: bool) -> None:
        self.version = version
        self.vid = version.version_id
        self.use_sources = source_references
        self.entries: list[dict] = []
        self.targets: list[str] = []
        self.sources: list[str] = []
        self.subject = ""
        self.device_url = ""

    # -- plumbing -------------------------------------------------------------
    def add(self, role: str, resource: dict, *, target: bool = True) -> str:
        """Append an entry and return its ``urn:uuid`` full URL."""
        url = f"urn:uuid:{uuid.uuid5(_UUID_NAMESPACE, f'{self.vid}/{role}')}"
        request = {"method": "POST", "url": resource["resourceType"]}
        identifiers = resource.get("identifier") or ()
        if identifiers:
            first = identifiers[0]
            request["ifNoneExist"] = f"identifier={first['system']}|{first['value']}"
        self.entries.append({"fullUrl": url, "resource": resource, "request": request})
        if target:
            self.targets.append(url)
        return url

    def identifier(self, role: str) -> list[dict]:
        """The business identifier of an output resource."""
        return [{"system": OUTPUT_SYSTEM, "value": f"{self.vid}/{role}"}]

    def refs(self, source_ids: Iterable[str]) -> list[dict]:
        """Conditional references to source Observations (deduplicated)."""
        if not self.use_sources:
            return []
        out: list[dict] = []
        for source_id in source_ids:
            match = re.fullmatch(r"Observation/([A-Za-z0-9\-.]{1,64})", source_id or "")
            if match is None:
                continue
            reference = f"Observation?_id={match.group(1)}"
            if all(r["reference"] != reference for r in out):
                out.append({"reference": reference})
            if reference not in self.sources:
                self.sources.append(reference)
        return out

    def base(self, resource_type: str, role: str, code: dict) -> dict:
        """Fields every output resource shares."""
        return {
            "resourceType": resource_type,
            "identifier": self.identifier(role),
            "status": "final",
            "code": code,
            "subject": {"reference": self.subject},
        }

    # -- patient and software -------------------------------------------------
    def patient(self, record: PatientRecord) -> None:
        """The Patient: pseudonym identifier and gender only."""
        resource: dict[str, Any] = {
            "resourceType": "Patient",
            "identifier": [
                {"system": PSEUDONYM_SYSTEM, "value": record.facts.pseudonym}
            ],
        }
        if record.facts.sex in ("female", "male", "other", "unknown"):
            resource["gender"] = record.facts.sex
        self.subject = self.add("patient", resource, target=False)

    def device(self) -> None:
        """The cartwin software that made the version."""
        v = self.version
        resource = {
            "resourceType": "Device",
            "identifier": [
                {
                    "system": SOFTWARE_SYSTEM,
                    "value": (
                        f"cartwin-{v.package_version}/{v.model_name}-{v.model_version}"
                    ),
                }
            ],
            "status": "active",
            "deviceName": [
                {"name": "cartwin", "type": "manufacturer-name"},
                {"name": v.model_name, "type": "model-name"},
            ],
            "version": [
                {"type": {"text": "cartwin package"}, "value": v.package_version},
                {"type": {"text": f"model {v.model_name}"}, "value": v.model_version},
            ],
        }
        self.device_url = self.add("device", resource, target=False)

    # -- scores ---------------------------------------------------------------
    def score(self, index: int, score: dict) -> None:
        """Observation of a score's value and the RiskAssessment it supports."""
        name, timepoint = score["name"], score.get("timepoint") or ""
        code = _code(_slug(name), name, f"{name} ({timepoint})" if timepoint else name)
        sources = self.refs(i.get("source_id", "") for i in score.get("inputs") or ())
        observation = self.base("Observation", f"scores/{index}/value", code)
        observation["issued"] = _instant(self.version.created_at)
        times = [i["time"] for i in score.get("inputs") or () if i.get("time")]
        if times:
            observation["effectiveDateTime"] = max(times)
        if score.get("value") is not None:
            observation["valueQuantity"] = _quantity(score["value"], "1")
        else:
            observation["dataAbsentReason"] = {
                "coding": [{"system": DATA_ABSENT, "code": "unknown"}],
                "text": score.get("message") or "an input is missing",
            }
        if sources:
            observation["derivedFrom"] = sources
        observation["method"] = {"text": score.get("reference", "")}
        value_url = self.add(f"scores/{index}/value", observation)

        risk = self.base("RiskAssessment", f"scores/{index}", code)
        risk["occurrenceDateTime"] = _instant(self.version.created_at)
        risk["method"] = {"text": score.get("reference", "")}
        risk["basis"] = [{"reference": value_url}, *sources]
        risk["prediction"] = [_score_prediction(score)]
        if score.get("message"):
            risk["note"] = [{"text": score["message"]}]
        self.add(f"scores/{index}", risk)

    # -- forecast -------------------------------------------------------------
    def forecast(self, record: PatientRecord) -> None:
        """Derived kinetics Observations and the forecast RiskAssessment."""
        kinetics = self.version.outputs.get("kinetics") or {}
        derived = kinetics.get("derived") or {}
        infusion = record.infusion_time
        if infusion is None or not derived:
            return
        quantity = kinetics.get("quantity", "")
        sources = self.refs(o.source_id for o in record.observations_of(quantity))
        interval = float(
            kinetics.get("interval", self.version.settings.get("interval", 0.9))
        )
        horizon = float(self.version.settings.get("t_end_days", 365.0))
        basis, predictions = [], []
        for name, summary in derived.items():
            end_days = _AUC_END_DAYS if name.startswith("auc") else horizon
            period = {
                "start": _instant(infusion),
                "end": _instant(infusion + dt.timedelta(days=end_days)),
            }
            url = self.add(
                f"kinetics/{name}",
                self._derived(name, summary, interval, period, sources),
            )
            basis.append({"reference": url})
            predictions.append(_forecast_prediction(name, summary, interval, period))
        risk = self.base(
            "RiskAssessment",
            "kinetics/forecast",
            _code("kinetics-forecast", "CAR T cell kinetics forecast"),
        )
        risk["occurrenceDateTime"] = _instant(self.version.created_at)
        risk["method"] = {"text": _method_text(self.version, kinetics)}
        risk["basis"] = [*basis, *sources]
        risk["prediction"] = predictions
        risk["note"] = [
            {
                "text": f"fit status {kinetics.get('status')}: "
                f"{kinetics.get('reason', '')}"
            }
        ]
        self.add("kinetics/forecast", risk)

    def _derived(
        self,
        name: str,
        summary: dict,
        interval: float,
        period: dict,
        sources: list[dict],
    ) -> dict:
        label = _DERIVED.get(name, name)
        observation = self.base(
            "Observation",
            f"kinetics/{name}",
            _code(f"kinetics-{name}", f"Forecast {label}"),
        )
        observation["effectivePeriod"] = period
        observation["issued"] = _instant(self.version.created_at)
        unit = summary["unit"]
        observation["valueQuantity"] = _quantity(summary["median"], unit)
        observation["referenceRange"] = [
            {
                "low": _quantity(summary["lower"], unit),
                "high": _quantity(summary["upper"], unit),
                "type": {"text": f"{interval:.0%} posterior predictive interval"},
                "text": (
                    f"cartwin convention: low-high is the {interval:.0%} forecast "
                    "interval "
                    "of the twin, not a normal range; the value is the median"
                ),
            }
        ]
        observation["method"] = {"text": _method_text(self.version, {})}
        if sources:
            observation["derivedFrom"] = sources
        return observation

    # -- grades ---------------------------------------------------------------
    def grade(self, which: str, timeline: dict) -> None:
        """Observation of the maximum ASTCT CRS or ICANS grade."""
        name = f"ASTCT {which.upper()}"
        observation = self.base(
            "Observation",
            f"{which}/max-grade",
            _code(f"{which}-max-grade", f"Maximum {name} grade"),
        )
        points = timeline.get("points") or ()
        if points:
            observation["effectivePeriod"] = {
                "start": points[0]["time"],
                "end": points[-1]["time"],
            }
        observation["issued"] = _instant(self.version.created_at)
        if timeline.get("max_grade") is not None:
            observation["valueInteger"] = int(timeline["max_grade"])
        else:
            observation["dataAbsentReason"] = {
                "coding": [{"system": DATA_ABSENT, "code": "unknown"}],
                "text": timeline.get("message") or "no grade could be assigned",
            }
        observation["method"] = {"text": timeline.get("reference", name)}
        notes = [*timeline.get("notes", ()), timeline.get("message", "")]
        if any(notes):
            observation["note"] = [{"text": n} for n in notes if n]
        self.add(f"{which}/max-grade", observation)

    # -- provenance -----------------------------------------------------------
    def provenance(self) -> None:
        """The Provenance linking every output to the version and its sources."""
        v = self.version
        entity = [
            {
                "role": "source",
                "what": {
                    "identifier": {"system": VERSION_SYSTEM, "value": self.vid},
                    "display": f"cartwin twin version {self.vid}",
                },
            },
            {
                "role": "source",
                "what": {
                    "identifier": {"system": DATA_HASH_SYSTEM, "value": v.data_hash},
                    "display": "SHA-256 of the input patient record",
                },
            },
        ]
        if v.parent_id:
            entity.append(
                {
                    "role": "revision",
                    "what": {
                        "identifier": {"system": VERSION_SYSTEM, "value": v.parent_id}
                    },
                }
            )
        entity += [{"role": "source", "what": {"reference": r}} for r in self.sources]
        resource = {
            "resourceType": "Provenance",
            "target": [{"reference": url} for url in self.targets],
            "occurredDateTime": _instant(v.created_at),
            "recorded": _instant(v.created_at),
            "activity": {
                "coding": [
                    {
                        "system": DATA_OPERATION,
                        "code": "CREATE",
                    }
                ]
            },
            "agent": [
                {
                    "type": {
                        "coding": [
                            {
                                "system": PARTICIPANT_TYPE,
                                "code": "assembler",
                            }
                        ]
                    },
                    "who": {"reference": self.device_url},
                }
            ],
            "entity": entity,
        }
        self.add("provenance", resource, target=False)

    # -- validation -----------------------------------------------------------
    def validated(self) -> dict:
        """The Bundle after validating each resource and the whole."""
        for index, entry in enumerate(self.entries):
            resource = entry["resource"]
            _validate(resource["resourceType"], resource, f"entry[{index}]")
        bundle = {
            "resourceType": "Bundle",
            "type": "transaction",
            "identifier": {"system": VERSION_SYSTEM, "value": self.vid},
            "entry": self.entries,
        }
        _validate("Bundle", bundle, "Bundle")
        return bundle


def _validate(resource_type: str, resource: dict, where: str) -> None:
    try:
        get_fhir_model_class(resource_type).model_validate(resource)
    except ValidationError as exc:
        first = exc.errors()[0]
        path = ".".join(str(p) for p in first.get("loc", ()))
        raise DataError(
            f"FHIR export: {where} {resource_type} field {path}: "
            f"{first.get('msg')} (fhir.resources R4B)"
        ) from None


def _code(code: str, display: str, text: str | None = None) -> dict:
    return {
        "coding": [{"system": OUTPUT_CODES, "code": code, "display": display}],
        "text": text or display,
    }


def _quantity(value: float, unit: str) -> dict:
    return {"value": value, "unit": unit, "system": UCUM, "code": unit}


def _instant(when: dt.datetime) -> str:
    return when.astimezone(dt.timezone.utc).isoformat()


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def _score_prediction(score: dict) -> dict:
    name = score["name"]
    value, category = score.get("value"), score.get("category")
    text = f"{name} = {value:.4g}" if value is not None else f"{name} not computed"
    text += f" ({score['timepoint']})" if score.get("timepoint") else ""
    prediction: dict[str, Any] = {"outcome": {"text": SCORE_OUTCOMES.get(name, name)}}
    if category in ("low", "high"):
        prediction["qualitativeRisk"] = {
            "coding": [
                {
                    "system": RISK_PROBABILITY,
                    "code": category,
                    "display": f"{category} likelihood",
                }
            ]
        }
        text += f"; risk group {category} by the published cut-off"
    else:
        text += "; no published cut-off applied"
    prediction["rationale"] = text
    return prediction


def _forecast_prediction(
    name: str, summary: dict, interval: float, period: dict
) -> dict:
    unit = summary["unit"]
    return {
        "outcome": {
            "coding": [
                {
                    "system": OUTPUT_CODES,
                    "code": f"kinetics-{name}",
                    "display": _DERIVED.get(name, name),
                }
            ],
            "text": _DERIVED.get(name, name),
        },
        "whenPeriod": period,
        "rationale": (
            f"median {summary['median']:.4g} {unit}; {interval:.0%} interval "
            f"{summary['lower']:.4g} to {summary['upper']:.4g} {unit}"
        ),
    }


def _method_text(version: TwinVersion, kinetics: dict) -> str:
    method = version.posterior.get("method", "posterior")
    text = (
        f"cartwin {version.package_version}, model {version.model_name} "
        f"{version.model_version}, {method} posterior"
    )
    if kinetics.get("status"):
        text += f", fit {kinetics['status']}"
    return text
