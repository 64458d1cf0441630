"""Problems found while importing a file, and the errors that carry them.

An importer collects every problem of a file before raising, so a user fixes
them in one go. Each :class:`Problem` has a stable ``code`` (for programs and
the web API) and a message naming the file, the resource, the field and the
value.

Problem codes
-------------
``io``, ``not-a-file`` (a device, FIFO or folder), ``too-large`` (above
``CARTWIN_MAX_INPUT_BYTES``, see :mod:`cartwin.io._input`), ``compression``,
``truncated``, ``encoding``, ``malformed-json``, ``nesting-too-deep``,
``not-fhir``, ``unknown-resource-type``, ``invalid`` (failed validation),
``invalid-reference`` (an empty or malformed patient reference),
``missing-value``, ``missing-time``, ``unit``, ``non-finite``,
``implausible`` (outside the plausible range of the quantity, age or dose),
``not-detected`` (a CAR T level of 0 without a known limit of
quantification), ``date-order`` (an end before its start),
``timestamp-no-zone``, ``timestamp-imprecise``, ``timestamp-invalid``,
``unsupported``, ``missing-id``.

Error messages are meant for the person running the import at the site: they
quote source values and resource ids so the record can be found, and are
never written to the store.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from cartwin.errors import DataError, UnitError

#: How many problems an error message lists before summarising the rest.
MAX_LISTED = 50


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one input file.

    Attributes
    ----------
    code : str
        Stable problem code (see the module docstring).
    source : str
        File name (or ``<bytes>``).
    resource : str
        ``Type/id`` of the resource, ``""`` for file-level problems.
    location : str
        Where in the file: ``entry[3]``, ``line 12``, ``line 4 column 17``.
    field : str
        FHIR element path inside the resource, e.g. ``valueQuantity.unit``.
    value : str
        The offending value, as ``repr`` (shortened).
    message : str
        What is wrong and what is allowed.
    """

    code: str
    source: str
    message: str
    resource: str = ""
    location: str = ""
    field: str = ""
    value: str = ""

    def __str__(self) -> str:
        where = ", ".join(p for p in (self.resource, self.location) if p)
        head = f"{self.source}: {where}" if where else self.source
        if self.field:
            head += f" field {self.field}"
        if self.value:
            head += f" = {self.value}"
        return f"{head}: {self.message} [{self.code}]"


class FhirImportError(DataError):
    """A FHIR file could not be imported; ``problems`` lists every reason."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__(_summary(self.problems))


class FhirUnitError(FhirImportError, UnitError):
    """Every problem of the file is a unit that cannot be converted."""


def raise_problems(problems: list[Problem]) -> None:
    """Raise the collected problems together; do nothing when there are none.

    Raises
    ------
    FhirUnitError
        When all problems are unit problems.
    FhirImportError
        Otherwise.
    """
    if not problems:
        return
    if all(p.code == "unit" for p in problems):
        raise FhirUnitError(problems)
    raise FhirImportError(problems)


def short_repr(value: object, limit: int = 80) -> str:
    """``repr`` of a value, cut to ``limit`` characters.

    Integers too long for ``repr`` (over 4300 digits) are described instead.
    """
    if isinstance(value, int) and value.bit_length() > 4 * limit:
        return f"<an integer of about {int(value.bit_length() * 0.30103) + 1} digits>"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _summary(problems: tuple[Problem, ...]) -> str:
    source = problems[0].source if problems else "?"
    lines = [f"{len(problems)} problem(s) in {source}:"]
    lines += [f"  {p}" for p in problems[:MAX_LISTED]]
    if len(problems) > MAX_LISTED:
        lines.append(f"  ... and {len(problems) - MAX_LISTED} more (see .problems)")
    return "\n".join(lines)
