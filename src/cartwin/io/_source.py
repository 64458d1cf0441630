"""Read a FHIR JSON file into a flat list of resources.

Accepted inputs: a Bundle of any type (collection, transaction, searchset,
batch, document, ...; nested Bundles are flattened), a single resource, or
NDJSON (one resource per line, as written by FHIR bulk export). Files may be
gzip or bzip2 compressed; compression is recognised by its magic bytes, not by
the file name. Text must be UTF-8 (a byte order mark is ignored).

Only the Bundle envelope is checked here (``entry`` is a list of objects);
resources are validated one by one by the importer, so that a problem names
the resource, not the bundle.
"""

from __future__ import annotations

import bz2
import gzip
import json
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

from cartwin.io.problems import FhirImportError, Problem

_GZIP_MAGIC = b"\x1f\x8b"
_BZIP2_MAGIC = b"BZh"


@dataclass(frozen=True)
class Entry:
    """One resource of the file and where it was found.

    Attributes
    ----------
    resource : dict
        The resource as parsed JSON.
    full_url : str or None
        ``Bundle.entry.fullUrl`` when the resource came from a Bundle.
    location : str
        ``entry[3]``, ``entry[2].resource.entry[0]``, ``line 12`` or ``resource``.
    """

    resource: dict
    full_url: str | None
    location: str


def read_source(path_or_bytes, source_name: str | None) -> tuple[bytes, str]:
    """Return the raw bytes and the name used in messages.

    Raises
    ------
    FhirImportError
        With code ``io`` when a file cannot be read.
    """
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        return bytes(path_or_bytes), source_name or "<bytes>"
    path = Path(os.fspath(path_or_bytes))
    name = source_name or path.name
    try:
        return path.read_bytes(), name
    except OSError as exc:
        problem = Problem("io", name, f"cannot read file {path}: {exc.strerror}")
        raise FhirImportError([problem]) from None


def parse_entries(raw: bytes, name: str) -> list[Entry]:
    """Decompress, decode and parse ``raw`` into resources.

    Raises
    ------
    FhirImportError
        For corrupt or truncated compression, bad UTF-8, malformed or truncated
        JSON (with line and column) and top-level values that are not FHIR
        resources.
    """
    text = _decode(_decompress(raw, name), name)
    stripped = text.lstrip()
    if not stripped:
        raise FhirImportError([Problem("not-fhir", name, "file is empty")])
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg != "Extra data":
            raise FhirImportError([_json_problem(exc, text, name)]) from None
        return _parse_ndjson(text, name)
    return _flatten(document, None, "resource", name)


def _decompress(raw: bytes, name: str) -> bytes:
    if raw.startswith(_GZIP_MAGIC):
        kind, unpack = "gzip", gzip.decompress
    elif raw.startswith(_BZIP2_MAGIC):
        kind, unpack = "bzip2", _bunzip
    else:
        return raw
    try:
        return unpack(raw)
    except EOFError:
        message = f"{kind} data end early: the file is truncated"
        raise FhirImportError([Problem("truncated", name, message)]) from None
    except (OSError, ValueError, zlib.error) as exc:
        message = f"{kind} data are corrupt: {exc}"
        raise FhirImportError([Problem("compression", name, message)]) from None


def _bunzip(raw: bytes) -> bytes:
    """Decompress one or more bzip2 streams; ``EOFError`` when one is cut."""
    parts, data = [], raw
    while data:
        decompressor = bz2.BZ2Decompressor()
        parts.append(decompressor.decompress(data))
        if not decompressor.eof:
            raise EOFError("bzip2 stream ends early")
        data = decompressor.unused_data
    return b"".join(parts)


def _decode(data: bytes, name: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        message = f"not UTF-8 text (byte {exc.start}, line {line}): {exc.reason}"
        raise FhirImportError([Problem("encoding", name, message)]) from None


def _json_problem(exc: json.JSONDecodeError, text: str, name: str, line_base=0):
    location = f"line {exc.lineno + line_base} column {exc.colno}"
    if exc.pos >= len(text.rstrip()) or exc.msg.startswith("Unterminated string"):
        message = "JSON ends early: the file is truncated"
        return Problem("truncated", name, message, location=location)
    message = f"malformed JSON: {exc.msg}"
    value = repr(text[exc.pos : exc.pos + 20])
    return Problem("malformed-json", name, message, location=location, value=value)


def _parse_ndjson(text: str, name: str) -> list[Entry]:
    entries: list[Entry] = []
    problems: list[Problem] = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            document = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(_json_problem(exc, line, name, line_base=line_no - 1))
            continue
        try:
            entries.extend(_flatten(document, None, f"line {line_no}", name))
        except FhirImportError as exc:
            problems.extend(exc.problems)
    if problems:
        raise FhirImportError(problems)
    return entries


def _flatten(document, full_url: str | None, location: str, name: str) -> list[Entry]:
    if not isinstance(document, dict) or not isinstance(
        document.get("resourceType"), str
    ):
        kind = type(document).__name__
        message = f"not a FHIR resource: a JSON {kind} without a resourceType string"
        raise FhirImportError([Problem("not-fhir", name, message, location=location)])
    if document["resourceType"] != "Bundle":
        return [Entry(document, full_url, location)]
    return _flatten_bundle(document, location, name)


def _flatten_bundle(bundle: dict, location: str, name: str) -> list[Entry]:
    items = bundle.get("entry", [])
    prefix = "" if location == "resource" else f"{location}.resource."
    if not isinstance(items, list):
        message = "Bundle.entry is not a list"
        problem = Problem("invalid", name, message, location=location, field="entry")
        raise FhirImportError([problem])
    entries: list[Entry] = []
    problems: list[Problem] = []
    for index, item in enumerate(items):
        where = f"{prefix}entry[{index}]"
        if not isinstance(item, dict):
            message = "Bundle entry is not a JSON object"
            problems.append(Problem("invalid", name, message, location=where))
            continue
        resource = item.get("resource")
        if resource is None:
            continue  # e.g. a DELETE request in a transaction: nothing to read
        try:
            entries.extend(_flatten(resource, item.get("fullUrl"), where, name))
        except FhirImportError as exc:
            problems.extend(exc.problems)
    if problems:
        raise FhirImportError(problems)
    return entries
