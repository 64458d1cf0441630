"""Command line of in silico trials: ``cartwin trial run`` and ``... example``.

:data:`trial_app` is a Typer sub-application; :mod:`cartwin.cli` mounts it as
``cartwin trial``. Commands:

* ``run TRIAL.toml -o OUTDIR [--patients N] [--seed S] [--scheduler
  tcp://HOST:PORT] [--chunk-size K] [--force] [--json]``: simulate the trial
  (resuming finished chunks), print the endpoints per arm with their intervals,
  the arm comparisons, the validation against the published trial and the
  files written; ``--json`` prints one JSON object instead.
* ``example [-o FILE] [--force]``: print or write the shipped example trial.

As in :mod:`cartwin.cli`, an error prints one line on stderr (and, under
``--json``, ``{"error": ..., "type": ...}`` on stdout) and exits with code 2.
The runner and pandas are imported only when a command runs, so that
``cartwin --help`` stays fast.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cartwin.errors import CartwinError, DataError

if TYPE_CHECKING:  # pragma: no cover
    from cartwin.trial.config import Trial
    from cartwin.trial.runner import TrialResult

trial_app = typer.Typer(
    help="In silico trials: virtual cohorts, arms, endpoints.",
    no_args_is_help=True,
    add_completion=False,
)
_err = Console(stderr=True, soft_wrap=True)
_out = Console(soft_wrap=True)

#: Same value as :data:`cartwin.trial.runner.DEFAULT_CHUNK_SIZE` (not imported
#: here: the runner imports pandas, slow for ``--help``; a test checks both).
DEFAULT_CHUNK_SIZE = 10_000


def _fail(exc: Exception, as_json: bool) -> None:
    """One line on stderr (and a JSON object on stdout under --json); exit 2."""
    _err.print(f"error: {exc}", markup=False, highlight=False)
    if as_json:
        print(json.dumps({"error": str(exc), "type": type(exc).__name__}))
    raise typer.Exit(code=2)


def _configure_logging() -> None:
    logging.basicConfig(
        level=os.environ.get("CARTWIN_LOG_LEVEL", "WARNING"),
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )


@trial_app.command("run")
def run_cmd(
    trial_file: Annotated[Path, typer.Argument(help="Trial file (.toml, .yaml).")],
    outdir: Annotated[
        Path,
        typer.Option(
            "-o", "--outdir", help="Folder for chunks, outcomes, endpoints, report."
        ),
    ],
    patients: Annotated[
        int | None,
        typer.Option(
            "--patients", min=1, help="Virtual patients per arm (default: the file's)."
        ),
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option("--seed", min=0, help="Seed of the trial (default: the file's)."),
    ] = None,
    scheduler: Annotated[
        str | None,
        typer.Option(
            "--scheduler", help="Dask scheduler tcp://HOST:PORT (default: local)."
        ),
    ] = None,
    chunk_size: Annotated[
        int,
        typer.Option(
            "--chunk-size", min=1, help="Patients per chunk (results depend on it)."
        ),
    ] = DEFAULT_CHUNK_SIZE,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Discard the finished chunks of another run in OUTDIR."
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Simulate a trial (resuming finished chunks); print endpoints per arm."""
    from cartwin.trial.runner import run_trial

    _configure_logging()
    try:
        trial = _load(trial_file, patients, seed)
        result = run_trial(
            trial,
            outdir,
            scheduler=scheduler,
            chunk_size=chunk_size,
            progress=not as_json,
            force=force,
        )
    except CartwinError as exc:
        _fail(exc, as_json)
    if as_json:
        print(json.dumps(result.to_dict(), indent=2, allow_nan=False))
        return
    _print_result(result)


def _load(path: Path, patients: int | None, seed: int | None) -> Trial:
    from cartwin.trial.config import load_trial

    return load_trial(path).with_overrides(patients_per_arm=patients, seed=seed)


@trial_app.command("example")
def example_cmd(
    output: Annotated[
        Path | None,
        typer.Option("-o", "--output", help="File to write (default: print)."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite FILE.")] = False,
) -> None:
    """Print or write the example trial file shipped with cartwin."""
    from cartwin.trial.config import example_trial_path

    source = example_trial_path()
    try:
        text = source.read_text(encoding="utf-8")
        if output is None:
            sys.stdout.write(text)
            return
        if output.exists() and not force:
            raise DataError(f"{output} exists; use --force to overwrite it")
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        _fail(
            DataError(f"cannot copy the example trial {source} to {output}: {exc}"),
            False,
        )
    except CartwinError as exc:
        _fail(exc, False)
    _err.print(f"example trial written to {output}", markup=False, highlight=False)


# -- text output ------------------------------------------------------------------
def _print_result(result: TrialResult) -> None:
    endpoints = result.endpoints
    if endpoints.get("arms"):
        _out.print(_endpoint_table(result.trial, endpoints["arms"]))
    if endpoints.get("comparisons"):
        _out.print(_comparison_table(endpoints["comparisons"]))
    if result.validation:
        _out.print(_validation_table(result.validation))
    prov = result.provenance
    _out.print(
        f"{prov['patients_per_arm']} virtual patients per simulated arm, seed "
        f"{prov['seed']}, {prov['chunks_run']} chunks run and "
        f"{prov['chunks_done_before']} reused ({escape(prov['backend'])}), "
        f"{prov['elapsed_s']:.1f} s"
    )
    for note in prov.get("notes", []):
        _out.print(f"note: {note}", markup=False, highlight=False)
    for role, path in result.paths.items():
        _out.print(f"{role}: {path}", markup=False, highlight=False)


def _endpoint_table(trial: Trial, arms: dict[str, Any]) -> Table:
    alpha = getattr(trial, "alpha", 0.05)
    table = Table(title=f"{escape(trial.name)}: endpoints ({1 - alpha:.0%} intervals)")
    table.add_column("endpoint")
    for arm, values in arms.items():
        n = values.get("n_analysed", values.get("n_eligible"))
        kind = "observed" if values.get("observed") else f"n={n}"
        table.add_column(f"{escape(arm)}\n({kind})", justify="right")
    names = [k for k in getattr(trial, "endpoints", ()) if _has_endpoint(arms, k)]
    for name in names:
        table.add_row(name, *(_cell(values.get(name)) for values in arms.values()))
    return table


def _has_endpoint(arms: dict[str, Any], name: str) -> bool:
    return any(isinstance(values.get(name), dict) for values in arms.values())


def _cell(value: Any) -> str:
    """``41.0% (33.1% to 49.4%)`` for a proportion, ``median 180 d (...)`` for PFS."""
    if not isinstance(value, dict) or value.get("available") is False:
        return "-"
    if value.get("kind") == "survival":
        if value.get("median_days") is None and value.get("median_reached") is False:
            return "median not reached " + _ci(value, ".0f")
        return f"median {_num(value.get('median_days'), '.0f')} d " + _ci(value, ".0f")
    if value.get("estimate") is None:
        return "-"
    return f"{_num(value.get('estimate'), '.1%')} " + _ci(value, ".1%")


def _ci(value: dict[str, Any], spec: str) -> str:
    if value.get("low") is None and value.get("high") is None:
        return ""
    return f"({_num(value.get('low'), spec)} to {_num(value.get('high'), spec)})"


def _num(value: Any, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _comparison_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(
        "endpoint",
        "arm",
        "vs",
        "measure",
        "estimate (interval)",
        "p",
        title="arm comparisons",
    )
    for row in rows:
        spec = ".2f" if row.get("measure") == "hazard ratio" else "+.1%"
        shown = f"{_num(row.get('estimate'), spec)} {_ci(row, spec)}"
        if row.get("estimate") is None:
            shown = escape(f"n/a: {row.get('note') or 'not estimable'}")
        table.add_row(
            row.get("endpoint", ""),
            escape(str(row.get("arm", ""))),
            escape(str(row.get("reference", ""))),
            row.get("measure", ""),
            shown,
            _num(row.get("p_value"), ".3g"),
        )
    return table


def _validation_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(
        "cohort",
        "endpoint",
        "published",
        "simulated",
        "within",
        "used in calibration",
        title="simulated against published",
    )
    for row in rows:
        # rates as percentages, durations (pfs_median_days) in days
        spec = ".0f" if str(row.get("endpoint", "")).endswith("_days") else ".1%"
        published = f"{_num(row.get('published'), spec)} " + _ci(
            {"low": row.get("published_low"), "high": row.get("published_high")}, spec
        )
        simulated = f"{_num(row.get('simulated'), spec)} " + _ci(
            {"low": row.get("simulated_low"), "high": row.get("simulated_high")}, spec
        )
        table.add_row(
            escape(str(row.get("cohort", ""))),
            str(row.get("endpoint", "")),
            published,
            simulated,
            "yes" if row.get("within") else "no",
            _calibration_mark(row),
        )
    return table


def _calibration_mark(row: dict[str, Any]) -> str:
    # the rule of the HTML report: agreement that is not a validation
    from cartwin.trial.validation import is_calibration

    if not is_calibration(row):
        return ""
    fitted = "by construction" in str(row.get("note", ""))
    return "yes (link fitted to it)" if fitted else "yes (target)"
