"""Reading a trial file: TOML/YAML parsing and typed, checked table access.

Private helpers of :mod:`cartwin.trial.config`, which documents the file
structure, its units and the public API (:func:`~cartwin.trial.config.load_trial`,
:func:`~cartwin.trial.config.parse_trial`).

- :func:`read_document` reads a ``.toml`` (:mod:`tomllib`) or ``.yaml``/``.yml``
  file (PyYAML's safe loader, refusing duplicate keys and reading ``2.0e6`` as
  a number, as YAML 1.2 and TOML do) into plain Python.
- :class:`Table` gives typed access to one table of it; every failure raises
  :class:`~cartwin.errors.TrialConfigError` naming the file, the dotted field
  path (``arm[1].tocilizumab.at_crs_grade``) and the offending value.
"""

from __future__ import annotations

import difflib
import math
import re
import tomllib
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any, NoReturn

import yaml

from cartwin.errors import TrialConfigError
from cartwin.graph.inputs import EARLIEST_START_DAY

#: Marks a value that is required (as a default) or absent (in messages).
MISSING = object()

#: File suffixes a trial file may have (compared in lower case).
SUFFIXES = (".toml", ".yaml", ".yml")


def read_document(path: Path) -> Any:
    """Parse a trial file into plain Python, without checking its fields.

    Parameters
    ----------
    path : pathlib.Path
        ``.toml``, ``.yaml`` or ``.yml`` file, UTF-8.

    Returns
    -------
    object
        What the parser gives (a dict for a well-formed file; None or an empty
        dict for an empty one).

    Raises
    ------
    TrialConfigError
        When the suffix is not supported, the file cannot be read or decoded,
        or it is not valid TOML/YAML (with the parser's line and column).
    """
    source = str(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise TrialConfigError(
            f"{source}: file type {path.suffix!r} not supported; use .toml, "
            ".yaml or .yml")
    try:
        text = path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TrialConfigError(f"{source}: cannot be read ({exc})") from None
    try:
        if suffix == ".toml":
            return _parse_toml(text, source)
        return _parse_yaml(text, source)
    except RecursionError:
        raise TrialConfigError(
            f"{source}: nested too deeply to be a trial file") from None


def _parse_toml(text: str, source: str) -> dict:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # the message ends with "(at line L, column C)"
        raise TrialConfigError(f"{source}: not valid TOML: {exc}") from None


class _TrialYamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader that refuses duplicate keys and reads 1e6 as float.

    PyYAML follows YAML 1.1, where ``2.0e6`` (no exponent sign) is a string;
    YAML 1.2 and TOML read it as a number, and so does this loader.
    """

    def construct_mapping(self, node, deep=False):  # PyYAML hook
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, Hashable):
                continue
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_TrialYamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def _parse_yaml(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=_TrialYamlLoader)  # a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = "" if mark is None else f" (at line {mark.line + 1}, " \
            f"column {mark.column + 1})"
        raise TrialConfigError(
            f"{source}: not valid YAML: {exc.problem or exc.context}{where}"
        ) from None
    except yaml.YAMLError as exc:
        raise TrialConfigError(f"{source}: not valid YAML: {exc}") from None


# -- typed access to one table of the file ----------------------------------------


class Table:
    """Typed, checked access to one table of a trial file.

    ``path`` is the dotted field path of the table (``arm[1].tocilizumab``);
    every failure raises :class:`TrialConfigError` with file, path and value.
    """

    def __init__(self, data: object, path: str, source: str) -> None:
        self.path, self.source = path, source
        if not isinstance(data, Mapping):
            where = path or "top level"
            raise TrialConfigError(f"{source}: {where} = {_show(data)}: must be a "
                                   "table (mapping)")
        self.data = dict(data)

    def where(self, key: str) -> str:
        """Dotted field path of ``key`` in this table."""
        return f"{self.path}.{key}" if self.path else key

    def fail(self, key: str, value: object, problem: str) -> NoReturn:
        """Raise TrialConfigError: file, field path, value (or "is missing")."""
        shown = "is missing" if value is MISSING else f"= {_show(value)}"
        raise TrialConfigError(f"{self.source}: {self.where(key)} {shown}: {problem}")

    def check_keys(self, allowed: tuple[str, ...], why: str = "") -> None:
        """Fail on the first key not in ``allowed``, suggesting a close one."""
        for key in self.data:
            if key in allowed:
                continue
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            self.fail(str(key), self.data[key],
                      f"unknown key ({why or 'allowed: ' + ', '.join(allowed)}){hint}")

    def _get(self, key: str, default: object) -> object:
        if key in self.data:
            return self.data[key]
        if default is MISSING:
            self.fail(key, MISSING, "is required")
        return default

    def table(self, key: str, required: bool = False) -> Table | None:
        """The sub-table ``key``; None when absent and not ``required``."""
        value = self._get(key, MISSING if required else None)
        return None if value is None else Table(value, self.where(key), self.source)

    def array(self, key: str) -> list[Table]:
        """The array of tables ``key`` (``[[key]]``); empty when absent."""
        value = self.data.get(key, [])
        if not isinstance(value, list):
            self.fail(key, value, f"must be an array of tables ([[{key}]])")
        return [Table(v, f"{self.where(key)}[{i}]", self.source)
                for i, v in enumerate(value)]

    def text(self, key: str, default: object = MISSING) -> Any:
        """Non-blank text at ``key``, or ``default`` when absent."""
        value = self._get(key, default)
        if key not in self.data:
            return value
        if not isinstance(value, str) or not value.strip():
            self.fail(key, value, "must be non-blank text")
        return value

    def choice(self, key: str, allowed: tuple[str, ...], default: object = MISSING):
        """The value at ``key`` (or ``default``), which must be in ``allowed``."""
        value = self._get(key, default)
        if value not in allowed:
            self.fail(key, value, f"allowed: {', '.join(map(repr, allowed))}")
        return value

    def number(self, key: str, default: object = MISSING, *, low: float | None = None,
               high: float | None = None, open_: bool = False) -> Any:
        """Finite number at ``key`` as float (or ``default``), within the range.

        ``open_`` excludes the bounds ``low`` and ``high`` themselves.
        """
        value = self._get(key, default)
        if key not in self.data:
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(key, value, "must be a number")
        if not math.isfinite(value):
            self.fail(key, value, "must be a finite number")
        _check_range(self, key, value, low, high, open_)
        return float(value)

    def integer(self, key: str, default: object = MISSING, *, low: int | None = None,
                high: int | None = None, why: str = "") -> Any:
        """Integer at ``key`` (or ``default``) within ``low``..``high``."""
        value = self._get(key, default)
        if key not in self.data:
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            detail = f" ({why})" if why else ""
            self.fail(key, value, f"must be an integer{detail}")
        _check_range(self, key, value, low, high, False, why)
        return value

    def days(self, key: str, default: object = MISSING, *,
             nonempty: bool = False) -> tuple[float, ...]:
        """Sorted distinct days before infusion (days since infusion, < 0)."""
        value = self._get(key, default)
        if key not in self.data:
            return tuple(value)
        if not isinstance(value, list) or (nonempty and not value) or any(
            isinstance(d, bool) or not isinstance(d, (int, float))
            or not EARLIEST_START_DAY <= d < 0 for d in value
        ):
            self.fail(key, value, "must be a list of days before infusion, "
                      f"{EARLIEST_START_DAY:g} <= day < 0"
                      + (", at least one" if nonempty else ""))
        if len(set(value)) != len(value):
            self.fail(key, value, "lists a day twice")
        return tuple(sorted(float(d) for d in value))


def _check_range(table: Table, key: str, value: float, low, high, open_: bool,
                 why: str = "") -> None:
    too_low = low is not None and (value <= low if open_ else value < low)
    too_high = high is not None and (value >= high if open_ else value > high)
    if too_low or too_high:
        lo = "" if low is None else f"{low:g} {'<' if open_ else '<='} "
        hi = "" if high is None else f" {'<' if open_ else '<='} {high:g}"
        table.fail(key, value, why or f"allowed: {lo}{key.split('.')[-1]}{hi}")


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
