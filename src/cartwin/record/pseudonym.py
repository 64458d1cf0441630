"""Keyed pseudonymisation of patient identifiers.

Source identifiers (FHIR ``Patient.id``, MRNs, OMOP ``person_source_value``) are
replaced by ``HMAC-SHA256(key, namespace + id)`` truncated to 16 hex digits
before anything is stored, logged or reported. The key is read from the
environment variable ``CARTWIN_PSEUDONYM_KEY`` or from the file named by
``CARTWIN_PSEUDONYM_KEY_FILE``; it is never written to the store. Without a key
the :func:`load_key` call fails with a message saying how to provide one,
except when the caller asks for the demo key (used only by ``cartwin demo``).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

from cartwin.errors import CartwinError

#: Environment variable holding the key itself.
KEY_ENV = "CARTWIN_PSEUDONYM_KEY"
#: Environment variable naming a file that holds the key.
KEY_FILE_ENV = "CARTWIN_PSEUDONYM_KEY_FILE"
#: Key of the bundled synthetic demo only; never use it for real patients.
DEMO_KEY = b"cartwin-demo-key-synthetic-data-only"
#: Length of a pseudonym in hexadecimal digits (64 bits).
PSEUDONYM_HEX_DIGITS = 16


class KeyMissingError(CartwinError):
    """No pseudonymisation key was configured."""


def load_key(*, allow_demo: bool = False) -> bytes:
    """Return the pseudonymisation key from the environment or key file.

    Raises
    ------
    KeyMissingError
        When neither ``CARTWIN_PSEUDONYM_KEY`` nor a readable
        ``CARTWIN_PSEUDONYM_KEY_FILE`` is set and ``allow_demo`` is false.
    """
    value = os.environ.get(KEY_ENV)
    if value:
        return value.encode("utf-8")
    path = os.environ.get(KEY_FILE_ENV)
    if path:
        try:
            data = Path(path).read_bytes().strip()
        except OSError as exc:
            raise KeyMissingError(f"cannot read key file {path}: {exc}") from None
        if not data:
            raise KeyMissingError(f"key file {path} is empty")
        return data
    if allow_demo:
        return DEMO_KEY
    raise KeyMissingError(
        f"no pseudonymisation key: set {KEY_ENV} or {KEY_FILE_ENV} "
        "(a secret kept outside the store; the same key must be used for every import)"
    )


def pseudonymise(source_id: str, key: bytes, *, namespace: str = "patient") -> str:
    """Keyed hash of a source identifier.

    Parameters
    ----------
    source_id : str
        Identifier as the source system spells it.
    key : bytes
        Secret key from :func:`load_key`.
    namespace : str
        Keeps hashes of different identifier kinds apart.

    Examples
    --------
    >>> pseudonymise("example", b"k") == pseudonymise("example", b"k")
    True
    >>> len(pseudonymise("example", b"k"))
    16
    """
    message = f"{namespace}:{source_id}".encode("utf-8")
    digest = hmac.new(key, message, hashlib.sha256).hexdigest()
    return digest[:PSEUDONYM_HEX_DIGITS]


def key_fingerprint(key: bytes) -> str:
    """A fingerprint that tells keys apart without revealing them (16 hex digits).

    Stored with a twin store so that an import under another key is refused.
    """
    return pseudonymise("cartwin key fingerprint", key, namespace="key-check")


def source_token(source_id: str, key: bytes) -> str:
    """Keyed hash of a source resource or row id (``Observation/abc``, a row id).

    Resource ids let anyone with access to the source system find the patient,
    so they are hashed like patient ids before anything is stored; the resource
    type stays readable: ``Observation/abc`` becomes ``Observation/#1f...``.
    An empty id, or one already hashed, is returned unchanged.
    """
    if not source_id:
        return source_id
    kind, sep, rest = source_id.partition("/")
    tail = rest if sep else kind
    if tail.startswith("#") and looks_like_pseudonym(tail[1:]):
        return source_id  # already hashed (e.g. re-import of a cartwin export)
    digest = pseudonymise(source_id, key, namespace="source")
    return f"{kind}/#{digest}" if sep else f"#{digest}"


def pseudonymise_sources(record, key: bytes):
    """Return ``record`` with every observation and event source id hashed."""
    import dataclasses

    from cartwin.record.model import PatientRecord

    observations = [
        dataclasses.replace(o, source_id=source_token(o.source_id, key))
        for o in record.observations
    ]
    events = [
        dataclasses.replace(e, source_id=source_token(e.source_id, key))
        for e in record.events
    ]
    return PatientRecord(
        facts=record.facts,
        observations=tuple(observations),
        events=tuple(events),
        site_utc_offset_min=record.site_utc_offset_min,
    )


def looks_like_pseudonym(text: str) -> bool:
    """Whether ``text`` has the shape of a pseudonym (16 lower-case hex digits)."""
    return len(text) == PSEUDONYM_HEX_DIGITS and all(
        c in "0123456789abcdef" for c in text
    )
