"""PostgreSQL store locations: recognise a URL, show it without its password."""

from __future__ import annotations

import os
import re
from urllib.parse import urlsplit, urlunsplit

#: URL schemes that name a PostgreSQL store (libpq connection URIs).
POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_postgres_url(location: str | os.PathLike | None) -> bool:
    """Whether ``location`` is a PostgreSQL connection URL.

    Examples
    --------
    >>> is_postgres_url("postgresql://cartwin@127.0.0.1:5432/twins")
    True
    >>> is_postgres_url("site.duckdb")
    False
    """
    if location is None or isinstance(location, os.PathLike):
        return False
    return str(location).lower().startswith(POSTGRES_SCHEMES)


def mask_url(url: str) -> str:
    """``url`` with its password, if any, replaced by ``***`` (for messages).

    Both places libpq reads a password from are masked: the user information
    and a ``password`` query parameter.

    Examples
    --------
    >>> mask_url("postgresql://ward:s3cret@db.local:5432/twins")
    'postgresql://ward:***@db.local:5432/twins'
    >>> mask_url("postgresql://db.local/twins?user=ward&password=s3cret")
    'postgresql://db.local/twins?user=ward&password=***'
    """
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.split(':', 1)[0]}:***@{host}"
    query = re.sub(r"(^|&)(password=)[^&]*", r"\1\2***", parts.query)
    return urlunsplit(parts._replace(netloc=netloc, query=query))
