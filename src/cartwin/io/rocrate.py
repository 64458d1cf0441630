"""Reproducibility package of a twin version as an RO-Crate 1.1 folder.

:func:`export_rocrate` writes a folder holding everything needed to rebuild a
twin version and check the result bit for bit; :func:`reproduce_rocrate`
rebuilds it and says whether the outputs are identical.

Folder layout
-------------
``record.json``
    The pseudonymised patient record in the canonical form of
    :func:`cartwin.record.hashing.record_to_dict`, serialised with sorted keys
    and no white space, so its SHA-256 **is** the version's ``data_hash``.
``settings.json``
    The :class:`~cartwin.twin.build.TwinSettings` the version was built with.
``twin_version.json``
    :meth:`TwinVersion.to_dict`: data hash, model name and version, package
    version, settings, parameters, posterior, outputs, parent and version id.
``ro-crate-metadata.json``
    JSON-LD (RO-Crate 1.1, Process Run Crate 0.5 profile): the three files with
    ``sha256``, ``contentSize`` and ``encodingFormat``; a ``CreateAction`` with
    the record and settings (also as ``PropertyValue`` entities) as
    ``object``, the twin version as ``result`` and the cartwin
    ``SoftwareApplication`` as ``instrument``; the model (name and version);
    the Python, NumPy, SciPy, JAX and jaxlib versions and the platform.

The JSON-LD is written by this module rather than with the ``rocrate``
package: the crate has a fixed shape of a dozen entities, the output must be
byte-for-byte deterministic for a given version, and the package would add a
dependency tree (and network-facing features) for no gain. ``sha256`` is not a
schema.org term; it is defined in the crate's ``@context`` as the
Workflow Run Crate term ``https://w3id.org/ro/terms/workflow-run#sha256``.

Reproduction
------------
:func:`reproduce_rocrate` first checks every file against its ``sha256``
(a mismatch or a malformed checksum raises :class:`CrateChecksumError`), then
rebuilds the version with :func:`~cartwin.twin.build.build_twin` from the
crate's record and settings, at the original ``created_at``, and compares the
canonical JSON (sorted keys, floats as their shortest round-trip text, so
equal text means bitwise-equal doubles) of ``data_hash``, ``parameters``,
``posterior`` and each key of ``outputs``. Bitwise equality is expected on
the same package, dependency versions and platform; differences in those are
listed in :attr:`ReproduceResult.notes` so a mismatch can be explained.

References
----------
Soiland-Reyes S, Sefton P, Crosas M, et al. Packaging research artefacts with
RO-Crate. Data Science 2022;5(2):97-138. doi:10.3233/DS-210053
RO-Crate Metadata Specification 1.1. https://w3id.org/ro/crate/1.1
Process Run Crate 0.5. https://w3id.org/ro/wfrun/process/0.5
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import math
import os
import platform
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from cartwin.errors import DataError
from cartwin.record.hashing import record_hash, record_to_dict
from cartwin.record.model import Event, Observation, PatientFacts, PatientRecord
from cartwin.twin.version import TwinVersion

#: Name of the metadata file of every RO-Crate.
METADATA_FILE = "ro-crate-metadata.json"
RECORD_FILE = "record.json"
SETTINGS_FILE = "settings.json"
VERSION_FILE = "twin_version.json"
CRATE_SPEC = "https://w3id.org/ro/crate/1.1"
PROCESS_RUN_PROFILE = "https://w3id.org/ro/wfrun/process/0.5"
SHA256_TERM = "https://w3id.org/ro/terms/workflow-run#sha256"
CONTEXT = [f"{CRATE_SPEC}/context", {"sha256": SHA256_TERM}]
#: Keys compared by :func:`reproduce_rocrate` (``outputs`` key by key).
COMPARED = ("data_hash", "parameters", "posterior", "outputs")
_DEPENDENCIES = ("numpy", "scipy", "jax", "jaxlib")
_HEX = frozenset("0123456789abcdef")


class CrateChecksumError(DataError):
    """A file of a crate is missing or does not match its recorded SHA-256."""


@dataclass(frozen=True)
class ReproduceResult:
    """Outcome of :func:`reproduce_rocrate`.

    Attributes
    ----------
    ok : bool
        True when every compared key is bitwise identical.
    differences : tuple of str
        Keys that differ (``data_hash``, ``outputs.kinetics``, ...), each with
        the first differing path below it.
    version_id : str
        Id of the version in the crate.
    reproduced_version_id : str
        Id of the rebuilt version (with the crate's ``created_at`` and parent).
    notes : tuple of str
        Differences of package, model or dependency versions and platform
        between the crate and this run.
    """

    ok: bool
    differences: tuple[str, ...]
    version_id: str
    reproduced_version_id: str
    notes: tuple[str, ...] = ()

    def summary(self) -> str:
        """One paragraph for the CLI."""
        if self.ok:
            head = f"reproduced twin version {self.version_id} exactly"
        else:
            head = (
                f"twin version {self.version_id} NOT reproduced (got "
                f"{self.reproduced_version_id}); differing: "
                + "; ".join(self.differences)
            )
        return "\n".join([head, *(f"note: {n}" for n in self.notes)])


# -- record round trip ------------------------------------------------------------
def record_from_dict(
    data: Mapping[str, Any], *, source: str = "record"
) -> PatientRecord:
    """Inverse of :func:`cartwin.record.hashing.record_to_dict`.

    Parameters
    ----------
    data : mapping
        ``{"facts", "observations", "events", "site_utc_offset_min"}`` with
        instants as ISO 8601 text and ``"NaN"`` for not-a-number floats.
    source : str
        Name used in error messages (e.g. the file).

    Returns
    -------
    PatientRecord
        Equal to the record that was serialised (``NaN`` floats are the
        dataclass's default ``NaN`` object, so records built with the default
        compare equal).

    Raises
    ------
    DataError
        When a key is missing or unknown, or a value has the wrong form; the
        message names the row and field.
    """
    try:
        facts = PatientFacts(**data["facts"])
        observations = tuple(
            _row(Observation, r, f"observations[{n}]")
            for n, r in enumerate(data.get("observations") or ())
        )
        events = tuple(
            _row(Event, r, f"events[{n}]")
            for n, r in enumerate(data.get("events") or ())
        )
        return PatientRecord(
            facts,
            observations,
            events,
            site_utc_offset_min=data.get("site_utc_offset_min"),
        )
    except DataError as exc:
        raise DataError(f"{source}: {exc}") from None
    except (KeyError, TypeError) as exc:
        raise DataError(f"{source}: facts: {exc}") from None


def _row(cls, row: Mapping[str, Any], where: str):
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(row) - set(fields))
    if unknown:
        raise DataError(f"{where}: unknown field(s) {', '.join(unknown)}")
    values = {}
    for name, value in row.items():
        if value == "NaN":
            default = fields[name].default
            is_nan = isinstance(default, float) and math.isnan(default)
            value = default if is_nan else float("nan")
        elif name in ("time", "start", "end") and value is not None:
            value = _instant(value, f"{where}.{name}")
        values[name] = value
    try:
        return cls(**values)
    except TypeError as exc:
        raise DataError(f"{where}: {exc}") from None


def _instant(text: Any, where: str) -> dt.datetime:
    try:
        when = dt.datetime.fromisoformat(str(text))
    except ValueError:
        raise DataError(f"{where} = {text!r} is not an ISO 8601 instant") from None
    if when.tzinfo is None:
        raise DataError(f"{where} = {text!r} has no UTC offset")
    return when


# -- export -----------------------------------------------------------------------
def export_rocrate(
    record: PatientRecord, version: TwinVersion, dest_dir: str | os.PathLike
) -> Path:
    """Write the RO-Crate of one twin version into ``dest_dir``.

    Parameters
    ----------
    record : PatientRecord
        The data the version was built from (its hash must equal
        ``version.data_hash``).
    version : TwinVersion
        The version to package.
    dest_dir : path
        Folder to create; it must not exist or be empty.

    Returns
    -------
    Path
        ``dest_dir``.

    Raises
    ------
    DataError
        When the record is not the version's data, or ``dest_dir`` is a file
        or a non-empty folder.
    """
    if record_hash(record) != version.data_hash:
        raise DataError(
            f"record hash {record_hash(record)} is not the data_hash "
            f"{version.data_hash} of twin version {version.version_id}: "
            "the crate would not reproduce it"
        )
    dest = Path(dest_dir)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise DataError(
            f"RO-Crate destination {dest} exists and is not an empty folder"
        )
    dest.mkdir(parents=True, exist_ok=True)
    files = {
        RECORD_FILE: _canonical(record_to_dict(record)),
        SETTINGS_FILE: json.dumps(version.settings, sort_keys=True, indent=1),
        VERSION_FILE: json.dumps(version.to_dict(), sort_keys=True, indent=1),
    }
    for name, text in files.items():
        (dest / name).write_bytes(text.encode("utf-8"))
    graph = _graph(version, {n: t.encode("utf-8") for n, t in files.items()})
    document = {"@context": CONTEXT, "@graph": graph}
    (dest / METADATA_FILE).write_text(
        json.dumps(document, indent=1) + "\n", encoding="utf-8"
    )
    return dest


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _graph(version: TwinVersion, files: dict[str, bytes]) -> list[dict]:
    vid = version.version_id
    created = version.created_at.isoformat()
    settings = [
        {"@id": f"#setting-{k}", "@type": "PropertyValue", "name": k, "value": v}
        for k, v in sorted(version.settings.items())
    ]
    return [
        {
            "@id": METADATA_FILE,
            "@type": "CreativeWork",
            "conformsTo": {"@id": CRATE_SPEC},
            "about": {"@id": "./"},
        },
        {
            "@id": "./",
            "@type": "Dataset",
            "name": f"cartwin twin version {vid}",
            "description": (
                f"Reproducibility package of twin version {vid} of patient "
                f"{version.pseudonym} (pseudonym): input record, settings, "
                "model identifiers, outputs."
            ),
            "identifier": vid,
            "datePublished": created,
            "conformsTo": {"@id": PROCESS_RUN_PROFILE},
            "license": {"@id": "#data-use"},
            "hasPart": [{"@id": name} for name in files],
            "mentions": {"@id": "#build"},
        },
        {
            "@id": "#data-use",
            "@type": "CreativeWork",
            "name": "Data use",
            "description": "Pseudonymised patient data: use only under the data-use "
            "agreement of the site that made this crate.",
        },
        *_file_entities(files, version),
        {
            "@id": "#build",
            "@type": "CreateAction",
            "name": "cartwin build_twin",
            "endTime": created,
            "instrument": {"@id": "#cartwin"},
            "object": [
                {"@id": RECORD_FILE},
                {"@id": SETTINGS_FILE},
                *({"@id": s["@id"]} for s in settings),
            ],
            "result": {"@id": VERSION_FILE},
        },
        *settings,
        {
            "@id": "#cartwin",
            "@type": "SoftwareApplication",
            "name": "cartwin",
            "softwareVersion": version.package_version,
            "hasPart": {"@id": "#model"},
            "softwareRequirements": [
                {"@id": f"#{n}"} for n in ("python", *_DEPENDENCIES)
            ],
        },
        {
            "@id": "#model",
            "@type": "SoftwareApplication",
            "name": version.model_name,
            "softwareVersion": version.model_version,
            "description": "model graph of the twin (kinetics, scores, grading rules)",
        },
        *_environment(),
    ]


def _file_entities(files: dict[str, bytes], version: TwinVersion) -> list[dict]:
    described = {
        RECORD_FILE: (
            "Pseudonymised patient record",
            (
                "canonical form; its SHA-256 is the twin version's data_hash "
                f"{version.data_hash}"
            ),
        ),
        SETTINGS_FILE: ("Twin settings", "cartwin.twin.build.TwinSettings as JSON"),
        VERSION_FILE: (
            "Twin version",
            (
                "cartwin.twin.version.TwinVersion.to_dict(): parameters, posterior, "
                "outputs, model and package versions"
            ),
        ),
    }
    return [
        {
            "@id": name,
            "@type": "File",
            "name": described[name][0],
            "description": described[name][1],
            "encodingFormat": "application/json",
            "contentSize": str(len(data)),
            "sha256": hashlib.sha256(data).hexdigest(),
        }
        for name, data in files.items()
    ]


def _environment() -> list[dict]:
    entities = [
        {
            "@id": "#python",
            "@type": "SoftwareApplication",
            "name": "Python",
            "softwareVersion": platform.python_version(),
            "description": f"{sys.implementation.name} on {_platform()}",
        }
    ]
    for name in _DEPENDENCIES:
        entities.append(
            {
                "@id": f"#{name}",
                "@type": "SoftwareApplication",
                "name": name,
                "softwareVersion": _dist_version(name),
            }
        )
    return entities


def _platform() -> str:
    return f"{platform.system()} {platform.machine()}"


def _dist_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


# -- reproduce --------------------------------------------------------------------
def reproduce_rocrate(
    dest_dir: str | os.PathLike, *, verify_checksums: bool = True
) -> ReproduceResult:
    """Rebuild the twin version of a crate and compare it bit for bit.

    Parameters
    ----------
    dest_dir : path
        Folder written by :func:`export_rocrate`.
    verify_checksums : bool
        Check every file against its ``sha256`` first (default). Turn off only
        to see what an edited file changes.

    Returns
    -------
    ReproduceResult

    Raises
    ------
    CrateChecksumError
        When a file is missing, its SHA-256 differs from the metadata, or the
        recorded checksum is not 64 hexadecimal digits.
    DataError
        When the metadata or a file is not valid JSON or not of the expected form.
    """
    from cartwin.twin.build import TwinSettings, build_twin

    crate = Path(dest_dir)
    graph = _read_graph(crate)
    if verify_checksums:
        _verify(crate, graph)
    record = record_from_dict(_read_json(crate / RECORD_FILE), source=RECORD_FILE)
    original = _read_version(crate / VERSION_FILE)
    settings = _read_json(crate / SETTINGS_FILE)
    try:
        twin_settings = TwinSettings(**settings)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{SETTINGS_FILE}: {exc}") from None
    rebuilt = build_twin(record, settings=twin_settings, now=original.created_at)
    rebuilt = dataclasses.replace(rebuilt, parent_id=original.parent_id)
    differences = _differences(original, rebuilt)
    if _canonical(settings) != _canonical(original.settings):
        differences.append(f"settings: {SETTINGS_FILE} differs from {VERSION_FILE}")
    return ReproduceResult(
        ok=not differences,
        differences=tuple(differences),
        version_id=original.version_id,
        reproduced_version_id=rebuilt.version_id,
        notes=tuple(_notes(original, rebuilt, graph)),
    )


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CrateChecksumError(
            f"RO-Crate file {path} cannot be read: {exc.strerror}"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"RO-Crate file {path} is not valid JSON: {exc}") from None


def _read_graph(crate: Path) -> dict[str, dict]:
    document = _read_json(crate / METADATA_FILE)
    graph = document.get("@graph") if isinstance(document, dict) else None
    if not isinstance(graph, list):
        raise DataError(f"{crate / METADATA_FILE}: no @graph list (not an RO-Crate)")
    return {str(e.get("@id")): e for e in graph if isinstance(e, dict)}


def _read_version(path: Path) -> TwinVersion:
    data = _read_json(path)
    try:
        return TwinVersion.from_dict(data)
    except (TypeError, ValueError, KeyError) as exc:
        raise DataError(f"{path.name}: not a twin version: {exc}") from None


def _verify(crate: Path, graph: dict[str, dict]) -> None:
    parts = (graph.get("./") or {}).get("hasPart") or []
    names = [p.get("@id") for p in (parts if isinstance(parts, list) else [parts])]
    for needed in (RECORD_FILE, SETTINGS_FILE, VERSION_FILE):
        if needed not in names:
            raise CrateChecksumError(
                f"{METADATA_FILE}: {needed} is not listed in hasPart"
            )
    for name in names:
        expected = str((graph.get(name) or {}).get("sha256", ""))
        if len(expected) != 64 or not set(expected) <= _HEX:
            raise CrateChecksumError(
                f"{METADATA_FILE}: sha256 of {name} = {expected!r} "
                "is not 64 lower-case hexadecimal digits"
            )
        try:
            actual = hashlib.sha256((crate / name).read_bytes()).hexdigest()
        except OSError as exc:
            raise CrateChecksumError(
                f"{crate / name} cannot be read: {exc.strerror}"
            ) from None
        if actual != expected:
            raise CrateChecksumError(
                f"{crate / name}: sha256 is {actual}, but "
                f"{METADATA_FILE} records {expected}; the file was "
                "changed or corrupted after export"
            )


def _differences(original: TwinVersion, rebuilt: TwinVersion) -> list[str]:
    found = []
    for key in COMPARED:
        old, new = getattr(original, key), getattr(rebuilt, key)
        if key == "outputs":
            for name in sorted(set(old) | set(new)):
                path = _first_difference(
                    old.get(name), new.get(name), f"outputs.{name}"
                )
                if path:
                    found.append(path)
        else:
            path = _first_difference(old, new, key)
            if path:
                found.append(path)
    return found


def _first_difference(old: Any, new: Any, path: str) -> str:
    """``""`` when equal; else ``key (first differing path: ...)``."""
    if _canonical(old) == _canonical(new):
        return ""
    return f"{path} (first difference at {_descend(old, new, path)})"


def _descend(old: Any, new: Any, path: str) -> str:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            if _canonical(old.get(key)) != _canonical(new.get(key)):
                return _descend(old.get(key), new.get(key), f"{path}.{key}")
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        for index, (a, b) in enumerate(zip(old, new)):
            if _canonical(a) != _canonical(b):
                return _descend(a, b, f"{path}[{index}]")
    return f"{path}: {_short(old)} vs {_short(new)}"


def _short(value: Any) -> str:
    text = _canonical(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _notes(
    original: TwinVersion, rebuilt: TwinVersion, graph: dict[str, dict]
) -> list[str]:
    notes = []
    for label, old, new in (
        ("cartwin package", original.package_version, rebuilt.package_version),
        ("model name", original.model_name, rebuilt.model_name),
        ("model version", original.model_version, rebuilt.model_version),
    ):
        if old != new:
            notes.append(f"{label}: crate {old}, this run {new}")
    current = {
        "python": platform.python_version(),
        **{n: _dist_version(n) for n in _DEPENDENCIES},
    }
    for name, version in current.items():
        recorded = (graph.get(f"#{name}") or {}).get("softwareVersion")
        if recorded is not None and recorded != version:
            notes.append(f"{name}: crate {recorded}, this run {version}")
    recorded_platform = str((graph.get("#python") or {}).get("description", ""))
    if recorded_platform and not recorded_platform.endswith(_platform()):
        notes.append(f"platform: crate {recorded_platform}, this run {_platform()}")
    return notes
