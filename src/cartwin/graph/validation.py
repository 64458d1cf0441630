"""Validation checks of graph models against published numbers, and their report.

A :class:`ValidationCheck` records one comparison: what was checked, the
source of the expected value, the expected and obtained values, the
tolerance and whether it passed. Model modules provide their checks as
functions returning lists of checks (``validation_checks()`` in
:mod:`cartwin.models.cart_tumour` and :mod:`cartwin.models.cytokines`);
:func:`run_validation` collects them, and :func:`validation_report_html`
writes a standalone HTML page (no scripts, no network) listing each one.
"""

from __future__ import annotations

import datetime as dt
import html
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from cartwin.errors import ModelSpecificationError


@dataclass(frozen=True)
class ValidationCheck:
    """One comparison of a model result with a published or reference value.

    Attributes
    ----------
    name : str
        What is checked (one line).
    model : str
        Model (graph node) checked.
    source : str
        Where the expected value comes from (paper with DOI, reference
        implementation, clinical-facts section).
    expected, obtained : float
        Reference value and the model's value, in ``unit``.
    tolerance : float
        Largest allowed ``|obtained - expected|`` (absolute), or relative to
        ``|expected|`` when ``relative`` is True; >= 0.
    unit : str
        Unit of the values.
    relative : bool
        Whether ``tolerance`` is relative.
    kind : str
        ``"validation"`` (against a published number or behaviour) or
        ``"verification"`` (against an independent implementation or an
        analytic result).
    note : str
        How the tolerance was chosen, or what the check shows.
    """

    name: str
    model: str
    source: str
    expected: float
    obtained: float
    tolerance: float
    unit: str = ""
    relative: bool = False
    kind: str = "validation"
    note: str = ""

    def __post_init__(self) -> None:
        if not self.tolerance >= 0:
            raise ModelSpecificationError(
                f"check {self.name!r}: tolerance must be >= 0, got {self.tolerance}"
            )

    @property
    def error(self) -> float:
        """``|obtained - expected|``, relative when the tolerance is."""
        gap = abs(self.obtained - self.expected)
        return gap / abs(self.expected) if self.relative else gap

    @property
    def passed(self) -> bool:
        """Whether the obtained value is within tolerance (NaN fails)."""
        return math.isfinite(self.obtained) and self.error <= self.tolerance

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record, with ``passed`` and ``error``."""
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out.update(passed=self.passed, error=self.error)
        return out


def run_validation(
    providers: Sequence[Callable[[], Iterable[ValidationCheck]]] | None = None,
) -> list[ValidationCheck]:
    """Run every model's checks; default: CAR T / tumour and cytokines.

    A provider that raises produces one failed check naming the error, so
    the report always shows every model.
    """
    if providers is None:
        from cartwin.models import cart_tumour, cytokines

        providers = (cart_tumour.validation_checks, cytokines.validation_checks)
    checks: list[ValidationCheck] = []
    for provider in providers:
        try:
            checks.extend(provider())
        except Exception as error:  # report, never abort the whole run
            checks.append(
                ValidationCheck(
                    f"{getattr(provider, '__module__', provider)} raised",
                    "?",
                    "",
                    0.0,
                    math.nan,
                    0.0,
                    note=f"{type(error).__name__}: {error}",
                )
            )
    return checks


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; width: 100%; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.35em 0.5em; vertical-align: top; }
th { background: #f0f0f0; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.pass td.verdict { color: #176b2c; font-weight: bold; }
tr.fail td.verdict { color: #a11; font-weight: bold; }
"""


def _number(value: float) -> str:
    if not math.isfinite(value):
        return "n/a"
    return f"{value:.6g}"


def _row(check: ValidationCheck) -> str:
    cells = [
        html.escape(check.model),
        html.escape(check.name),
        html.escape(check.kind),
        html.escape(check.source),
        _number(check.expected),
        _number(check.obtained),
        ("±" + _number(check.tolerance * 100) + " %")
        if check.relative
        else "±" + _number(check.tolerance),
        html.escape(check.unit),
        "pass" if check.passed else "FAIL",
        html.escape(check.note),
    ]
    classes = ["", "", "", "", "num", "num", "num", "", "verdict", ""]
    body = "".join(
        f'<td class="{c}">{v}</td>' if c else f"<td>{v}</td>"
        for c, v in zip(classes, cells)
    )
    return f'<tr class="{"pass" if check.passed else "fail"}">{body}</tr>'


def validation_report_html(
    checks: Sequence[ValidationCheck], *, title: str = "cartwin model validation"
) -> str:
    """A standalone HTML page listing each check (no scripts, no network).

    Parameters
    ----------
    checks : sequence of ValidationCheck
        The checks, in the order to show.
    title : str
        Page title.

    Returns
    -------
    str
        UTF-8 HTML with a summary line (passed / total) and one table row per
        check: model, check, kind, source, expected, obtained, tolerance,
        unit, verdict and note.
    """
    passed = sum(c.passed for c in checks)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    header = "".join(
        f"<th>{h}</th>"
        for h in (
            "model",
            "check",
            "kind",
            "source",
            "expected",
            "obtained",
            "tolerance",
            "unit",
            "verdict",
            "note",
        )
    )
    rows = "\n".join(_row(c) for c in checks)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>"
        f"<p>{passed} of {len(checks)} checks passed. Generated {stamp}.</p>"
        f"<table><thead><tr>{header}</tr></thead><tbody>\n{rows}\n</tbody></table>"
        "</body></html>\n"
    )
