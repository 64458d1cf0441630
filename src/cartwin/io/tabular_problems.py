"""Problems found in a table or its mapping, and the errors that carry them.

A tabular import collects every problem of a file before raising, so that the
person preparing the data fixes them in one go. Each :class:`CellProblem`
names the file, the sheet (XLSX), the row as a spreadsheet shows it (1-based,
header rows included), the column by letter and by header, and the value.

Problem codes
-------------
``io`` (unreadable file or sheet), ``not-a-file`` (a device, FIFO or
folder), ``too-large`` (above ``CARTWIN_MAX_INPUT_BYTES``), ``no-header``
(fewer rows than the header needs), ``missing-column``, ``duplicate-header``,
``missing-id``, ``not-pseudonym``, ``non-numeric``, ``unit``,
``implausible`` (outside the plausible range of the quantity, or a CAR T dose
outside 1e5-1e11 cells), ``not-detected`` (a CAR T level of 0 without
``lloq``), ``missing-unit``,
``missing-value`` (a value without its date, an event without its start),
``censored-invalid``, ``date-invalid``, ``date-no-zone``, ``date-order`` (an
event that ends before it starts), ``day-invalid``, ``missing-infusion``,
``conflict`` (one patient, two different values of a per-patient column),
``unmapped-quantity`` (only with ``unmapped = "error"``).

Messages never quote a patient id (only the row that holds it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from cartwin.errors import DataError, UnitError

#: How many problems an error message lists before summarising the rest.
MAX_LISTED = 50


@dataclass(frozen=True)
class CellProblem:
    """One thing wrong with one table file.

    Attributes
    ----------
    code : str
        Stable problem code (see the module docstring).
    source : str
        File name as shown to the user.
    message : str
        What is wrong and what is allowed.
    sheet : str
        XLSX sheet name, ``""`` for CSV and Parquet.
    row : int or None
        Row number as a spreadsheet shows it (header rows count), or ``None``
        for problems of the whole file.
    column : str
        Column letter (``"A"``, ``"AB"``), ``""`` when the problem has none.
    header : str
        Header text of the column (the name row for several header rows).
    value : str
        The offending value as ``repr``, shortened; ``""`` when not shown.
    """

    code: str
    source: str
    message: str
    sheet: str = ""
    row: int | None = None
    column: str = ""
    header: str = ""
    value: str = ""

    def __str__(self) -> str:
        parts = [self.source]
        if self.sheet:
            parts.append(f"sheet {self.sheet!r}")
        if self.row is not None:
            parts.append(f"row {self.row}")
        if self.column or self.header:
            header = f"({self.header!r})" if self.header else ""
            parts.append(" ".join(p for p in ("column", self.column, header) if p))
        head = ", ".join(parts)
        if self.value:
            head += f": value {self.value}"
        return f"{head}: {self.message} [{self.code}]"


class TabularImportError(DataError):
    """A table could not be imported; ``problems`` lists every reason."""

    def __init__(self, problems: Iterable[CellProblem]) -> None:
        self.problems = tuple(problems)
        super().__init__(_summary(self.problems))


class TabularUnitError(TabularImportError, UnitError):
    """Every problem of the table is a unit that cannot be converted."""


class TabularMappingError(DataError):
    """The TOML mapping file is unreadable or inconsistent.

    The message names the mapping file, the key and the value.
    """


def raise_problems(problems: list[CellProblem]) -> None:
    """Raise the collected problems together; do nothing when there are none.

    Raises
    ------
    TabularUnitError
        When all problems are unit problems.
    TabularImportError
        Otherwise.
    """
    if not problems:
        return
    if all(p.code == "unit" for p in problems):
        raise TabularUnitError(problems)
    raise TabularImportError(problems)


def short_repr(value: object, limit: int = 60) -> str:
    """``repr`` of a cell value, cut to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _summary(problems: tuple[CellProblem, ...]) -> str:
    source = problems[0].source if problems else "?"
    lines = [f"{len(problems)} problem(s) in {source}:"]
    lines += [f"  {p}" for p in problems[:MAX_LISTED]]
    if len(problems) > MAX_LISTED:
        lines.append(f"  ... and {len(problems) - MAX_LISTED} more (see .problems)")
    return "\n".join(lines)
