"""Read a FHIR JSON file into a flat list of resources.

Accepted inputs: a Bundle of any type (collection, transaction, searchset,
batch, document, ...; nested Bundles are flattened), a single resource, or
NDJSON (one resource per line, as written by FHIR bulk export). Files may be
gzip or bzip2 compressed; compression is recognised by its magic bytes, not by
the file name. Text must be UTF-8 (a byte order mark is ignored).

Hostile input ends in a problem, never in a crash (:mod:`cartwin.io._input`
states the size limits): devices and FIFOs are refused, inputs and their
decompressed bytes are limited to ``CARTWIN_MAX_INPUT_BYTES`` (1 GiB by
default), JSON nested deeper than 100 levels (or than Python can parse) is
``nesting-too-deep``,
and an integer literal too large for a float is reported as a non-finite
number at its field (one of more than 4300 digits, which Python refuses to
read, is read as infinity, see :data:`MAX_INT_DIGITS`).

Only the Bundle envelope is checked here (``entry`` is a list of objects);
resources are validated one by one by the importer, so that a problem names
the resource, not the bundle.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from cartwin.io._input import (
    InputError,
    check_json_depth,
    decompress_bounded,
    read_bounded,
)
from cartwin.io.problems import FhirImportError, Problem

#: Longest integer literal read as an integer when a file holds one that
#: Python refuses (over 4300 digits); longer ones then become infinity.
MAX_INT_DIGITS = 30


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
        With code ``io`` when a file cannot be read, ``not-a-file`` for a
        device, FIFO or folder, ``too-large`` above the input limit.
    """
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        return bytes(path_or_bytes), source_name or "<bytes>"
    path = Path(os.fspath(path_or_bytes))
    name = source_name or path.name
    try:
        return read_bounded(path, name), name
    except InputError as exc:
        detail = exc.detail
        if exc.code == "io":
            reason = detail.removeprefix("cannot be read: ")
            detail = f"cannot read file {path}: {reason}"
        raise FhirImportError([Problem(exc.code, name, detail)]) from None


def parse_entries(raw: bytes, name: str) -> list[Entry]:
    """Decompress, decode and parse ``raw`` into resources.

    Raises
    ------
    FhirImportError
        For corrupt or truncated compression, bad UTF-8, malformed or truncated
        JSON (with line and column) and top-level values that are not FHIR
        resources.
    """
    try:
        data = decompress_bounded(raw, name)
        check_json_depth(data, name)
    except InputError as exc:
        raise FhirImportError([Problem(exc.code, name, exc.detail)]) from None
    text = _decode(data, name)
    del data
    stripped = text.lstrip()
    if not stripped:
        raise FhirImportError([Problem("not-fhir", name, "file is empty")])
    try:
        document = _loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg != "Extra data":
            raise FhirImportError([_json_problem(exc, text, name)]) from None
        return _parse_ndjson(text, name)
    except _TooDeep:
        raise FhirImportError([_too_deep(name, "resource")]) from None
    return _flatten(document, None, "resource", name)


class _TooDeep(Exception):
    """JSON nested deeper than the parser's recursion limit."""


def _loads(text: str):
    """``json.loads``; ``_TooDeep`` for deep nesting.

    Integers are parsed by ``json`` itself (a Python hook per integer costs
    time on every file); only when Python refuses an integer literal (more
    than 4300 digits) is the text parsed again with :func:`_bounded_int`.
    Integers that are merely too large for a float are reported where they
    are read (:func:`cartwin.io._checks.finite_number`).
    """
    try:
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            raise
        except ValueError:  # an integer literal over Python's digit limit
            return json.loads(text, parse_int=_bounded_int)
    except RecursionError:
        raise _TooDeep() from None


def _bounded_int(digits: str) -> int | float:
    """An integer literal; beyond :data:`MAX_INT_DIGITS` digits, infinity.

    Python refuses to convert more than 4300 digits (and no clinical value
    has 30), so the value becomes ``inf`` and is reported as non-finite at
    its field instead of failing the whole file.
    """
    if len(digits.lstrip("-")) > MAX_INT_DIGITS:
        return float("-inf") if digits.startswith("-") else float("inf")
    return int(digits)


def _too_deep(name: str, location: str) -> Problem:
    message = (
        "nesting too deep: the JSON nests arrays or objects deeper than can be "
        "parsed (FHIR resources nest a few dozen levels at most)"
    )
    return Problem("nesting-too-deep", name, message, location=location)


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
            document = _loads(line)
        except json.JSONDecodeError as exc:
            problems.append(_json_problem(exc, line, name, line_base=line_no - 1))
            continue
        except _TooDeep:
            problems.append(_too_deep(name, f"line {line_no}"))
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
