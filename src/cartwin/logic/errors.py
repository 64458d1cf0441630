"""Errors of the logical-model layer, all subclasses of :mod:`cartwin.errors`.

Each message names the file (or resource), the line and column where one
exists, the offending value and what is allowed.
"""

from __future__ import annotations

from cartwin.errors import DataError, ModelSpecificationError


class LogicSyntaxError(ModelSpecificationError):
    """A MaBoSS ``.bnd``/``.cfg`` or SBML-qual file cannot be parsed.

    Attributes
    ----------
    source : str
        File name (or ``"<string>"``) of the text.
    line, column : int
        1-based position of the offending token.
    """

    def __init__(self, source: str, line: int, column: int, message: str) -> None:
        self.source = source
        self.line = line
        self.column = column
        super().__init__(f"{source}:{line}:{column}: {message}")


class UnknownNodeError(ModelSpecificationError):
    """A rule, rate or setting names a node (or variable) the model lacks."""

    def __init__(self, source: str, line: int, column: int, message: str) -> None:
        self.source = source
        self.line = line
        self.column = column
        super().__init__(f"{source}:{line}:{column}: {message}")


class SimulationError(ModelSpecificationError):
    """The MaBoSS engine refused a model or a run setting."""


class ExpressionDataError(DataError):
    """Single-cell or flow data cannot be used for personalisation."""
