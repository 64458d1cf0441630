"""Bounded reading of input files: size limits, compression, file kinds.

A hostile or broken input must end in a clear error, not in a machine out of
memory. The readers of this package read their files through
:func:`read_bounded` and decompress through :func:`decompress_bounded`:

- Only regular files are read. A device (``/dev/zero``), a FIFO or a socket
  never ends or blocks, so it is refused before anything is read.
- At most :func:`max_input_bytes` bytes are read from a file, and at most as
  many bytes come out of decompression. Compressed data are decompressed in
  chunks of 1 MiB, so a "bomb" (309 bytes of bzip2 that expand to 300 MB)
  stops as soon as it passes the limit, having held one limit's worth of
  memory. The default limit is 1 GiB; the environment variable
  ``CARTWIN_MAX_INPUT_BYTES`` sets another (a whole number of bytes).
- :func:`read_head` reads the start of a file for recognising its format,
  under the same rules.
- JSON may nest at most :data:`MAX_JSON_DEPTH` arrays and objects
  (:func:`check_json_depth`, run on the bytes before parsing). Real FHIR and
  Phenopacket files nest about 10 levels. Catching ``RecursionError`` is not
  enough: a library imported in the same process may raise Python's
  recursion limit (``mpbn`` sets it to 100 000), and deep input then
  overflows the C stack inside ``json`` or ``pydantic`` and kills the process.
- Gzip and bzip2 are recognised by their magic bytes, not by the file name;
  several concatenated streams are read as one. A cut or corrupt stream is an
  :class:`InputError` that says which.

Failures are :class:`InputError` (a :class:`~cartwin.errors.DataError`) with
a stable ``code``: ``io``, ``not-a-file``, ``too-large``, ``truncated``,
``compression``, ``nesting-too-deep``. Each reader turns them into its own
problem type.
"""

from __future__ import annotations

import bz2
import gzip
import io
import os
import re
import stat
import zlib
from pathlib import Path

import numpy as np

from cartwin.errors import DataError

#: Environment variable with the largest input size in bytes.
MAX_INPUT_ENV = "CARTWIN_MAX_INPUT_BYTES"
#: Default largest input, compressed or not (1 GiB).
DEFAULT_MAX_INPUT_BYTES = 1 << 30
#: Bytes read or decompressed at a time.
CHUNK_BYTES = 1 << 20
#: Deepest nesting of JSON arrays and objects read.
MAX_JSON_DEPTH = 100
_GZIP_MAGIC = b"\x1f\x8b"
_BZIP2_MAGIC = b"BZh"
_JSON_ESCAPE = re.compile(rb"\\.", re.S)
#: +1 for the bytes that open an array or object, -1 for those that close one.
_JSON_DELTA = np.zeros(256, np.int8)
_JSON_DELTA[[ord("["), ord("{")]] = 1
_JSON_DELTA[[ord("]"), ord("}")]] = -1


class InputError(DataError):
    """An input cannot be read within the limits.

    Attributes
    ----------
    code : str
        ``io``, ``not-a-file``, ``too-large``, ``truncated``, ``compression``
        or ``nesting-too-deep``.
    name : str
        The input as named in messages.
    detail : str
        What is wrong, without the name.
    """

    def __init__(self, code: str, name: str, detail: str) -> None:
        super().__init__(f"{name}: {detail}")
        self.code, self.name, self.detail = code, name, detail


def max_input_bytes() -> int:
    """The largest input in bytes (``CARTWIN_MAX_INPUT_BYTES`` or 1 GiB).

    Raises
    ------
    DataError
        When the environment variable is not a positive whole number.
    """
    text = os.environ.get(MAX_INPUT_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_INPUT_BYTES
    try:
        limit = int(text)
    except ValueError:
        limit = 0
    if limit <= 0:
        raise DataError(
            f"{MAX_INPUT_ENV} = {text!r}: must be a positive whole number of bytes"
        )
    return limit


def read_bounded(path: str | os.PathLike, name: str) -> bytes:
    """The bytes of the regular file ``path``, refusing more than the limit.

    Raises
    ------
    InputError
        ``io`` (cannot be opened or read), ``not-a-file`` (a folder, device,
        FIFO or socket) or ``too-large``.
    """
    path = Path(os.fspath(path))
    _check_regular(path, name)
    limit = max_input_bytes()
    try:
        with path.open("rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise InputError("io", name, f"cannot be read: {exc.strerror}") from None
    if len(data) > limit:
        raise InputError("too-large", name, _too_large("is larger than", limit))
    return data


def read_head(path: str | os.PathLike, name: str, size: int | None = None) -> bytes:
    """The first ``size`` bytes of a file's content, decompressed (all: ``None``).

    For recognising a file's format: a device or FIFO, a cut or corrupt
    gzip/bzip2 stream and a file over the limit are :class:`InputError`
    (never ``EOFError``, which a command-line program reports as "Aborted").

    Raises
    ------
    InputError
        As :func:`read_bounded` and :func:`decompress_bounded`.
    """
    if size is None or size < 0:
        return decompress_bounded(read_bounded(path, name), name)
    path = Path(os.fspath(path))
    _check_regular(path, name)
    try:
        with path.open("rb") as handle:
            magic = handle.read(3)
            handle.seek(0)
            return _head_of(handle, magic, name, size)
    except OSError as exc:
        raise InputError("io", name, f"cannot be read: {exc.strerror}") from None


def _head_of(handle, magic: bytes, name: str, size: int) -> bytes:
    if magic.startswith(_GZIP_MAGIC):
        kind, stream = "gzip", gzip.GzipFile(fileobj=handle)
    elif magic.startswith(_BZIP2_MAGIC):
        kind, stream = "bzip2", bz2.BZ2File(handle)
    else:
        return handle.read(size)
    try:
        return stream.read(size)
    except EOFError:
        message = f"{kind} data end early: the file is truncated"
        raise InputError("truncated", name, message) from None
    except (OSError, ValueError, zlib.error) as exc:
        raise InputError("compression", name, f"{kind} data are corrupt: {exc}") \
            from None


def decompress_bounded(raw: bytes, name: str) -> bytes:
    """``raw`` decompressed when it is gzip or bzip2, else ``raw`` itself.

    Raises
    ------
    InputError
        ``too-large`` when the input or its decompressed bytes pass the
        limit, ``truncated`` when a stream ends early, ``compression`` when
        the data are corrupt.
    """
    limit = max_input_bytes()
    if len(raw) > limit:
        raise InputError("too-large", name, _too_large("is larger than", limit))
    if raw.startswith(_GZIP_MAGIC):
        kind, opener = "gzip", lambda data: gzip.GzipFile(fileobj=data)
    elif raw.startswith(_BZIP2_MAGIC):
        kind, opener = "bzip2", bz2.BZ2File
    else:
        return raw
    try:
        with opener(io.BytesIO(raw)) as handle:
            return _read_chunks(handle, name, kind, limit)
    except EOFError:
        message = f"{kind} data end early: the file is truncated"
        raise InputError("truncated", name, message) from None
    except (OSError, ValueError, zlib.error) as exc:
        message = f"{kind} data are corrupt: {exc}"
        raise InputError("compression", name, message) from None


def _check_regular(path: Path, name: str) -> None:
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise InputError("io", name, f"cannot be read: {exc.strerror}") from None
    if not stat.S_ISREG(mode):
        raise InputError(
            "not-a-file",
            name,
            f"is {_kind(mode)}, not a regular file; cartwin reads only files "
            "(save the data to a file first)",
        )


def _read_chunks(handle, name: str, kind: str, limit: int) -> bytes:
    parts, total = [], 0
    while True:
        chunk = handle.read(CHUNK_BYTES)
        if not chunk:
            return b"".join(parts)
        total += len(chunk)
        if total > limit:
            detail = _too_large(f"expands ({kind}) to more than", limit)
            raise InputError("too-large", name, detail)
        parts.append(chunk)


def _too_large(what: str, limit: int) -> str:
    return (
        f"{what} {limit} bytes, the input limit; raise it with "
        f"{MAX_INPUT_ENV} (bytes) if the file is genuine"
    )


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def check_json_depth(data: bytes, name: str, limit: int = MAX_JSON_DEPTH) -> None:
    """Refuse JSON that nests arrays and objects deeper than ``limit``.

    Raises
    ------
    InputError
        ``nesting-too-deep``, with the depth found.
    """
    deepest = json_depth(data)
    if deepest > limit:
        raise InputError(
            "nesting-too-deep",
            name,
            f"nesting too deep: the JSON nests {deepest} levels of arrays and "
            f"objects; cartwin reads at most {limit} (FHIR and Phenopacket files "
            "nest about 10)",
        )


def json_depth(data: bytes) -> int:
    """Deepest nesting of arrays and objects in JSON text (UTF-8 bytes).

    Brackets inside strings do not count. Read without parsing, in chunks of
    :data:`CHUNK_BYTES` with NumPy, so that it costs a few milliseconds per
    megabyte and cannot recurse. Malformed JSON gives a number too (the
    parser reports what is wrong with it).

    Examples
    --------
    >>> json_depth(b'{"a": [1, {"b": "[[["}]}')
    3
    """
    if b"\\" in data:
        data = _JSON_ESCAPE.sub(b"", data)  # an escaped quote is not a quote
    codes = np.frombuffer(data, np.uint8)
    deepest = level = quotes = 0
    for start in range(0, codes.size, 16 * CHUNK_BYTES):
        part = codes[start : start + 16 * CHUNK_BYTES]
        quote_at = np.flatnonzero(part == 34)
        deltas = _JSON_DELTA[part]
        at = np.flatnonzero(deltas)
        outside = ((np.searchsorted(quote_at, at) + quotes) & 1) == 0
        running = np.cumsum(deltas[at[outside]], dtype=np.int64) + level
        if running.size:
            deepest, level = max(deepest, int(running.max())), int(running[-1])
        quotes += quote_at.size
    return deepest
