"""Command line of the logical-model layer: ``cartwin logic ...``.

``logic_app`` is a Typer sub-application; ``cartwin.cli`` mounts it as
``cartwin logic``. Commands:

* ``run MODEL.bnd MODEL.cfg [--seed N] [--json]``: state probability
  trajectories and the final state distribution of a MaBoSS model.
* ``personalise MODEL --cells FILE.h5ad [--json]``: the patient's T-cell fate
  distribution and the genes used and missing. ``MODEL`` is ``tcell`` (the
  shipped model) or a ``.bnd`` file with its ``.cfg`` next to it.

Errors print one line on stderr and exit with code 2.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from cartwin.errors import CartwinError
from cartwin.logic.engine import LogicResult, SimulationSettings, simulate
from cartwin.logic.expression import read_h5ad, select_cells
from cartwin.logic.fates import Stimulation, load_tcell_model
from cartwin.logic.maboss_io import load_maboss
from cartwin.logic.network import LogicalModel
from cartwin.logic.personalise import PatientFates, PersonalisationOptions, personalise

logic_app = typer.Typer(
    help="Logical (MaBoSS) models of T-cell state.",
    no_args_is_help=True,
    add_completion=False,
)
_err = Console(stderr=True, soft_wrap=True)
_out = Console(soft_wrap=True)
_MAX_COLUMNS = 8


def _fail(exc: Exception) -> None:
    _err.print(f"[bold red]error:[/] {exc}", highlight=False)
    raise typer.Exit(code=2)


def _settings(
    seed: int | None, samples: int | None, max_time: float | None
) -> SimulationSettings:
    return SimulationSettings(seed=seed, sample_count=samples, max_time=max_time)


@logic_app.command("run")
def run_command(
    bnd: Annotated[Path, typer.Argument(help="MaBoSS network (.bnd).")],
    cfg: Annotated[Path, typer.Argument(help="MaBoSS configuration (.cfg).")],
    seed: Annotated[int | None, typer.Option(help="Pseudo-random seed.")] = None,
    samples: Annotated[int | None, typer.Option(help="Trajectories.")] = None,
    max_time: Annotated[float | None, typer.Option(help="Horizon.")] = None,
    points: Annotated[int, typer.Option(help="Time points shown (text).")] = 11,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Simulate a MaBoSS model; print trajectories and the final distribution."""
    try:
        model = load_maboss(bnd, cfg)
        result = simulate(model, settings=_settings(seed, samples, max_time))
    except CartwinError as exc:
        _fail(exc)
    if as_json:
        _out.print_json(json.dumps(result.to_dict()), highlight=False)
        return
    _out.print(_trajectory_table(result, points))
    _out.print(
        _distribution_table("final state distribution", result.final_distribution())
    )


def _trajectory_table(result: LogicResult, points: int) -> Table:
    final = result.probabilities[-1]
    order = [int(i) for i in np.argsort(-final, kind="stable")[:_MAX_COLUMNS]]
    rows = np.unique(
        np.linspace(0, len(result.times) - 1, max(points, 2)).round().astype(int)
    )
    table = Table(title=f"{result.model_name}: state probabilities")
    table.add_column("time", justify="right")
    for i in order:
        table.add_column(result.labels[i], justify="right")
    if len(result.labels) > len(order):
        table.add_column("other states", justify="right")
    for r in rows:
        probs = result.probabilities[r]
        cells = [f"{probs[i]:.3f}" for i in order]
        if len(result.labels) > len(order):
            cells.append(f"{probs.sum() - probs[order].sum():.3f}")
        table.add_row(f"{result.times[r]:g}", *cells)
    return table


def _distribution_table(title: str, values: dict[str, float]) -> Table:
    table = Table(title=title)
    table.add_column("state / fate")
    table.add_column("probability", justify="right")
    for name, prob in sorted(values.items(), key=lambda kv: -kv[1]):
        table.add_row(name, f"{prob:.4f}")
    return table


@logic_app.command("personalise")
def personalise_command(
    cells: Annotated[Path, typer.Option(help="AnnData file (.h5ad) of T cells.")],
    model: Annotated[str, typer.Argument(help="'tcell' or a .bnd file.")] = "tcell",
    source: Annotated[str, typer.Option("--layer", help="X, raw or a layer.")] = "X",
    subset: Annotated[str | None, typer.Option(help="KEY=V1,V2: cells kept.")] = None,
    groupby: Annotated[str | None, typer.Option(help="obs column of groups.")] = None,
    mode: Annotated[str, typer.Option(help="cells or clusters.")] = "cells",
    antigen: Annotated[str, typer.Option(help="none, acute or chronic.")] = "chronic",
    costim: Annotated[str, typer.Option(help="none, CD28, 4-1BB or both.")] = "4-1BB",
    seed: Annotated[int | None, typer.Option(help="Pseudo-random seed.")] = 1,
    samples: Annotated[int | None, typer.Option(help="Trajectories.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Personalise the T-cell model from single-cell data; print fates and genes."""
    try:
        logical = _resolve_model(model)
        data = _load_cells(cells, subset)
        options = PersonalisationOptions(source=source, groupby=groupby, mode=mode)  # type: ignore[arg-type]
        stimulation = Stimulation(antigen=antigen, costimulation=costim)  # type: ignore[arg-type]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fates = personalise(
                data,
                model=logical,
                stimulation=stimulation,
                options=options,
                settings=_settings(seed, samples, None),
            )
    except CartwinError as exc:
        _fail(exc)
    notes = [str(w.message) for w in caught]
    if as_json:
        payload: dict[str, Any] = {
            **fates.to_dict(),
            "warnings": notes,
            "cells_file": str(cells),
        }
        _out.print_json(json.dumps(payload), highlight=False)
        return
    _print_fates(fates, notes)


def _resolve_model(name: str) -> LogicalModel:
    if name == "tcell":
        return load_tcell_model()
    bnd = Path(name)
    return load_maboss(bnd, bnd.with_suffix(".cfg"))


def _load_cells(path: Path, subset: str | None) -> Any:
    data = read_h5ad(path)
    if subset is None:
        return data
    key, sep, values = subset.partition("=")
    if not sep or not key or not values:
        raise CartwinError(f"--subset {subset!r}: expected KEY=VALUE[,VALUE...]")
    return select_cells(data, key, [v.strip() for v in values.split(",")])


def _print_fates(fates: PatientFates, notes: list[str]) -> None:
    _out.print(
        _distribution_table(f"T-cell fates ({fates.n_cells} cells)", dict(fates.fates))
    )
    genes = Table(title="genes used per node")
    genes.add_column("node")
    genes.add_column("genes in the data")
    for node, names in fates.genes_used.items():
        genes.add_row(node, ", ".join(names))
    _out.print(genes)
    _out.print(f"genes missing: {', '.join(fates.genes_missing) or 'none'}")
    _out.print(f"nodes at model default: {', '.join(fates.nodes_default) or 'none'}")
    for note in notes:
        _err.print(f"[yellow]warning:[/] {note}", highlight=False)
