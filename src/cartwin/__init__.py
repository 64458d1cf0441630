"""cartwin: virtual twins of patients receiving engineered cell therapy.

The public API is re-exported here; see ``README.md`` for the command line.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("cartwin")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
