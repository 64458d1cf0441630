"""Command line of cartwin (Typer).

Every command that shows results has ``--json`` for scripts. The store is
chosen with ``--store PATH`` or the ``CARTWIN_STORE`` environment variable. A
patient is named by its source id (hashed with the pseudonymisation key on the
way in) or by its pseudonym. Only this module configures logging and prints.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cartwin import __version__
from cartwin.errors import CartwinError

app = typer.Typer(
    help="Virtual twins of patients receiving CAR T-cell therapy.",
    no_args_is_help=True,
    add_completion=False,
)
twin_app = typer.Typer(help="Calibrate and inspect patient twins.", no_args_is_help=True)
app.add_typer(twin_app, name="twin")


def _mount_logic() -> None:
    from cartwin.logic.cli import logic_app

    app.add_typer(logic_app, name="logic", help="Logical (Boolean) models of T-cell state.")


_mount_logic()


def _mount_trial() -> None:
    from cartwin.trial.cli import trial_app

    app.add_typer(trial_app, name="trial")


_mount_trial()


def _mount_service() -> None:
    from cartwin.service.cli import mount

    mount(app)


_mount_service()


def _mount_scheduler() -> None:
    from cartwin.scheduler.cli import queue_app

    app.add_typer(queue_app)


_mount_scheduler()



console = Console(stderr=True)
out = Console(soft_wrap=True)

StoreOption = typer.Option(
    None,
    "--store",
    envvar="CARTWIN_STORE",
    help="Twin store: a DuckDB file or a postgresql:// URL. "
    "Default: $CARTWIN_STORE or ./cartwin.duckdb.",
)
JsonOption = typer.Option(False, "--json", help="Print machine-readable JSON.")
GraphOption = typer.Option(
    False, "--graph",
    help="Also calibrate the multi-scale model graph and compare scenarios "
    "(seconds per patient; the first run compiles the graph).",
)


def _configure(as_json: bool = False) -> None:
    _JSON_MODE["on"] = as_json
    logging.basicConfig(
        level=os.environ.get("CARTWIN_LOG_LEVEL", "WARNING"),
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    from cartwin._jax import configure_jax

    configure_jax()


def _fail(exc: Exception) -> None:
    """Print a clear error (stderr; as JSON on stdout too under --json), exit 2.

    Text from data files is never read as terminal markup, and long paths are
    not wrapped.
    """
    console.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
    if _JSON_MODE["on"]:
        print(json.dumps({"error": str(exc), "type": type(exc).__name__}))
    raise typer.Exit(code=2)


_JSON_MODE = {"on": False}


def _emit_json(data: Any) -> None:
    print(json.dumps(data, default=str, indent=2))


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )


def _as_dict(obj: Any) -> Any:
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if dataclasses.is_dataclass(obj):
        return dataclasses.asdict(obj)
    return obj


# -- import -------------------------------------------------------------------
@app.command("import")
def import_cmd(
    sources: list[str] = typer.Argument(
        ..., help="Files, folders or postgresql:// URLs to import."
    ),
    store: Optional[str] = StoreOption,
    fmt: Optional[str] = typer.Option(
        None, "--format", help="fhir, phenopacket, omop or tabular (default: detect)."
    ),
    site_utc_offset: Optional[int] = typer.Option(
        None,
        "--site-utc-offset",
        help="UTC offset of the site in minutes, used for timestamps without zone.",
    ),
    codes: Optional[Path] = typer.Option(
        None, "--codes", help="Extra code-mapping CSV (same columns as codes.csv)."
    ),
    mapping: Optional[Path] = typer.Option(
        None, "--mapping", help="TOML mapping of a CSV/XLSX/Parquet table."
    ),
    schema: Optional[str] = typer.Option(
        None, "--schema", help="Schema of an OMOP CDM in PostgreSQL."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Import patient data into the store (each source is one transaction)."""
    _configure(as_json)
    from cartwin.io.formats import ReadOptions
    from cartwin.record.pseudonym import load_key

    options = ReadOptions(
        site_utc_offset_min=site_utc_offset, codes=codes, mapping=mapping,
        omop_schema=schema,
    )
    try:
        key = load_key()
        results = _import_sources(sources, fmt, store, key, options)
    except CartwinError as exc:
        _fail(exc)
    if as_json:
        _emit_json(results)
        return
    for item in results:
        _print_import(item)


def _import_sources(sources, fmt, store_path, key, options) -> list[dict[str, Any]]:
    from cartwin.io.formats import expand_sources, read_source
    from cartwin.record.pseudonym import key_fingerprint
    from cartwin.store import open_store

    results = []
    sources = expand_sources(sources, fmt)
    with open_store(store_path) as store, _progress() as progress:
        fingerprint = key_fingerprint(key)
        store.check_key(fingerprint, record=False)
        task = progress.add_task("importing", total=len(sources))
        for source in sources:
            parsed = read_source(source, fmt, key=key, options=options)
            report = parsed.report.to_dict()
            summary = store.import_records(
                parsed.records,
                source_name=parsed.source_name,
                source_sha256=parsed.source_sha256,
                report=report,
            )
            store.check_key(fingerprint)  # recorded once something was stored
            results.append(
                {
                    "file": parsed.source_name,
                    "patients": [r.facts.pseudonym for r in parsed.records],
                    "store": _as_dict(summary),
                    "report": report,
                }
            )
            progress.advance(task)
    return results


def _print_import(item: dict[str, Any]) -> None:
    store = item["store"]
    name = item["file"]
    if store.get("already_imported"):
        out.print(f"[bold]{escape(name)}[/]: already imported, nothing changed")
        return
    patients = ", ".join(item["patients"]) or "none"
    out.print(
        f"[bold]{escape(name)}[/]: patients {patients}; stored "
        f"{store.get('n_observations', 0)} observations "
        f"({store.get('n_observations_duplicate', 0)} duplicates skipped), "
        f"{store.get('n_events', 0)} events "
        f"({store.get('n_events_duplicate', 0)} duplicates skipped)"
    )
    skipped = _skipped(item["report"])
    if skipped:
        reasons = "; ".join(f"{n} {why}" for why, n in sorted(skipped.items()))
        out.print(
            f"  not used: {escape(reasons)} (--json lists every code, recognised or not)"
        )


def _skipped(report: dict[str, Any]) -> dict[str, int]:
    """Reasons and counts of what an adapter read but did not use."""
    totals: dict[str, int] = {}

    def add(reasons: Any) -> None:
        if isinstance(reasons, dict):
            for why, n in reasons.items():
                if isinstance(n, int):
                    totals[why] = totals.get(why, 0) + n

    for section in ("resources", "tables", "elements"):
        entries = report.get(section)
        items = entries.values() if isinstance(entries, dict) else entries or []
        for entry in items:
            if isinstance(entry, dict):
                add(entry.get("skipped"))
    add(report.get("skipped"))
    return totals


# -- twin ---------------------------------------------------------------------
@twin_app.command("update")
def twin_update(
    patients: list[str] = typer.Argument(None, help="Source ids or pseudonyms."),
    all_patients: bool = typer.Option(False, "--all", help="Update every patient."),
    store: Optional[str] = StoreOption,
    seed: int = typer.Option(20240101, help="Seed of the forecast draws."),
    graph: bool = GraphOption,
    fates: Path | None = typer.Option(
        None, "--fates",
        help="JSON of the CAR T product's T-cell fates: the output of `cartwin logic "
        "personalise MODEL --cells FILE.h5ad --json`, or {fate: fraction} with "
        "effector, memory_like, exhausted, apoptotic, quiescent. Sets the model "
        "graph's memory fraction and expansion prior; needs --graph.",
    ),
    as_json: bool = JsonOption,
) -> None:
    """Calibrate the twin of each patient on all its data; store a new version."""
    _configure(as_json)
    try:
        linked = _fate_settings(fates, graph)
        versions, failures = _update(patients or [], all_patients, store, seed, graph,
                                     linked)
    except CartwinError as exc:
        _fail(exc)
    if as_json:
        summaries = [_version_summary(v) for v in versions]
        _emit_json(summaries + [{"failed": True, **f} for f in failures])
    else:
        for version in versions:
            _print_version(version)
        for failure in failures:
            console.print(f"error: patient {failure['pseudonym']}: {failure['error']}",
                          markup=False, highlight=False)
    if failures:
        raise typer.Exit(code=2)


def _update(names, all_patients, store_path, seed, graph=False, fates=None):
    from cartwin.store import open_store
    from cartwin.twin.build import TwinSettings, build_twin

    settings = TwinSettings(seed=seed, graph=graph, **(fates or {}))
    versions, failures = [], []
    with open_store(store_path) as store:
        pseudonyms = _resolve_many(store, names, all_patients)
        with _progress() as progress:
            task = progress.add_task("calibrating", total=len(pseudonyms))
            for pseudonym in pseudonyms:
                try:
                    record = store.load_record(pseudonym)
                    parent = store.latest_twin_version(pseudonym)
                    version = build_twin(record, settings=settings, parent=parent)
                    store.save_twin_version(version)
                    versions.append(version)
                except CartwinError as exc:
                    # One patient's data never stop the others' updates.
                    failures.append({"pseudonym": pseudonym, "error": str(exc)})
                progress.advance(task)
    return versions, failures


def _fate_settings(path: Path | None, graph: bool) -> dict[str, Any]:
    """``TwinSettings`` fields ``fates`` and ``fates_n_cells`` from ``--fates``.

    The file is the JSON of ``cartwin logic personalise MODEL --cells FILE --json``
    (its ``fates`` and ``n_cells`` are read, other keys ignored) or a plain
    ``{fate: fraction}`` object; either way every fate of
    :data:`cartwin.graph.fates_link.FATES` is needed, as a finite number >= 0,
    and the fractions must pass :func:`cartwin.graph.fates_link.fates_to_inputs`
    (sum 1, some active product), so a file is refused here, before any patient.

    Raises
    ------
    DataError
        ``--fates`` without ``--graph``, a missing or unreadable file, invalid
        JSON, or a missing, unknown, negative or non-finite fate; the message
        names the file, the field and the value.
    """
    from cartwin.errors import DataError

    if path is None:
        return {}
    if not graph:
        raise DataError(f"--fates {path}: the fates set the model graph's priors; "
                        "add --graph")
    data = _fates_json(path)
    field, fates = ("fates.", data["fates"]) if "fates" in data else ("", data)
    if not isinstance(fates, dict):
        raise DataError(f"--fates {path}: fates = {fates!r}: must be a JSON object "
                        "{fate: fraction}")
    values = _fate_values(path, field, fates)
    n_cells = data.get("n_cells", 0) if field else 0
    if isinstance(n_cells, bool) or not isinstance(n_cells, int) or n_cells < 0:
        raise DataError(f"--fates {path}: n_cells = {n_cells!r}: must be an integer "
                        ">= 0 (cells the fates were personalised from)")
    from cartwin.graph.fates_link import fates_to_inputs

    try:
        fates_to_inputs(values, n_cells=n_cells or None, source=str(path))
    except DataError as exc:
        raise DataError(f"--fates {path}: {exc}") from None
    return {"fates": values, "fates_n_cells": n_cells}


def _fates_json(path: Path) -> dict[str, Any]:
    """The top-level JSON object of a ``--fates`` file."""
    from cartwin.errors import DataError

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"--fates {path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"--fates {path}: cannot be read ({exc})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"--fates {path}: not valid JSON: {exc.msg} (line "
                        f"{exc.lineno}, column {exc.colno})") from None
    if not isinstance(data, dict):
        raise DataError(f"--fates {path}: top level is {type(data).__name__}: must "
                        "be a JSON object")
    return data


def _fate_values(path: Path, field: str, fates: dict) -> dict[str, float]:
    """Every fate's fraction, checked: known names, finite numbers >= 0."""
    import math

    from cartwin.errors import DataError
    from cartwin.graph.fates_link import FATES

    for name, value in fates.items():
        if name not in FATES:
            raise DataError(f"--fates {path}: {field}{name} = {value!r}: unknown "
                            f"fate; expected {', '.join(FATES)}")
    for name in FATES:
        value = fates.get(name)
        if name not in fates:
            raise DataError(f"--fates {path}: {field}{name} is missing; every fate "
                            f"is needed: {', '.join(FATES)}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value) or value < 0:
            raise DataError(f"--fates {path}: {field}{name} = {value!r}: must be a "
                            "finite number >= 0 (fraction of cells)")
    return {name: float(fates[name]) for name in FATES}


def _resolve_many(store, names, all_patients) -> list[str]:
    from cartwin.errors import DataError

    if all_patients:
        return [p.pseudonym for p in store.persons()]
    if not names:
        raise DataError("name at least one patient, or use --all")
    key = _optional_key()
    return [store.resolve_patient(name, key) for name in names]


def _optional_key() -> bytes | None:
    from cartwin.record.pseudonym import KeyMissingError, load_key

    try:
        return load_key()
    except KeyMissingError:
        return None


@twin_app.command("show")
def twin_show(
    patient: str = typer.Argument(..., help="Source id or pseudonym."),
    store: Optional[str] = StoreOption,
    history: bool = typer.Option(False, "--history", help="List every version."),
    as_json: bool = JsonOption,
) -> None:
    """Show the latest twin version of a patient: scores, grades, forecast."""
    _configure(as_json)
    from cartwin.errors import StoreError
    from cartwin.store import open_store

    try:
        with open_store(store, read_only=True) as db:
            pseudonym = db.resolve_patient(patient, _optional_key())
            versions = db.twin_versions(pseudonym)
    except CartwinError as exc:
        _fail(exc)
    if not versions:
        _fail(StoreError(f"patient {pseudonym} has no twin yet: run `cartwin twin update {pseudonym}`"))
    if as_json:
        data = _version_summary(versions[-1])
        if history:
            data["history"] = [_version_header(v) for v in versions]
        _emit_json(data)
        return
    _print_version(versions[-1])
    if history:
        table = Table("version", "created", "data hash", "parent")
        for v in versions:
            table.add_row(v.version_id, v.created_at.isoformat(), v.data_hash[:12], v.parent_id or "")
        out.print(table)


def _version_header(version) -> dict[str, Any]:
    return {
        "version_id": version.version_id,
        "pseudonym": version.pseudonym,
        "created_at": version.created_at.isoformat(),
        "data_hash": version.data_hash,
        "model": f"{version.model_name} {version.model_version}",
        "package_version": version.package_version,
        "parent_id": version.parent_id,
    }


def _version_summary(version) -> dict[str, Any]:
    outputs = version.outputs
    kinetics = {k: v for k, v in outputs.get("kinetics", {}).items()
                if k not in ("t_days", "median", "lower", "upper")}
    return {
        **_version_header(version),
        "settings": version.settings,
        "kinetics": kinetics,
        "scores": outputs.get("scores", []),
        "crs_max_grade": outputs.get("crs", {}).get("max_grade"),
        "icans_max_grade": outputs.get("icans", {}).get("max_grade"),
        "crs_daily_max": outputs.get("crs", {}).get("daily_max", []),
        "journey": outputs.get("journey", []),
    }


def _print_version(version) -> None:
    data = _version_summary(version)
    out.print(
        f"[bold]patient {data['pseudonym']}[/] twin version {data['version_id']} "
        f"({data['model']}, cartwin {data['package_version']})"
    )
    kin = data["kinetics"]
    if kin.get("status") == "unavailable" or "derived" not in kin:
        out.print(f"CAR T kinetics: {kin.get('status')} - {escape(str(kin.get('reason', '')))}")
    else:
        table = Table(f"CAR T kinetics ({kin['quantity']}, fit {kin['status']})",
                      "median", f"{int(kin.get('interval', 0.9) * 100)}% interval", "unit")
        for name, item in kin["derived"].items():
            table.add_row(name, f"{item['median']:.4g}",
                          f"{item['lower']:.4g} - {item['upper']:.4g}", item["unit"])
        out.print(table)
    table = Table("score", "value", "category", "note")
    for score in data["scores"]:
        value = "missing" if score["value"] is None else f"{score['value']:.3g}"
        name = score["name"]
        if score.get("timepoint"):
            name = f"{name} ({score['timepoint']})"
        table.add_row(escape(name), value, escape(score.get("category") or ""),
                      escape(score.get("message", "")))
    out.print(table)
    out.print(f"CRS max grade: {data['crs_max_grade']}   ICANS max grade: {data['icans_max_grade']}")


# -- report -------------------------------------------------------------------
@app.command("report")
def report_cmd(
    patient: str = typer.Argument(..., help="Source id or pseudonym."),
    output: Path = typer.Option(Path("report.html"), "-o", "--output", help="HTML file to write."),
    store: Optional[str] = StoreOption,
    as_json: bool = JsonOption,
) -> None:
    """Write the standalone HTML report of a patient's latest twin version."""
    _configure(as_json)
    try:
        result = _write_report(patient, output, store)
    except CartwinError as exc:
        _fail(exc)
    if as_json:
        _emit_json(result)
    else:
        out.print(f"report written to {output}")


def _write_report(patient: str, output: Path, store_path) -> dict[str, Any]:
    from cartwin.errors import DataError, StoreError
    from cartwin.report import render_report
    from cartwin.store import open_store

    with open_store(store_path, read_only=True) as db:
        pseudonym = db.resolve_patient(patient, _optional_key())
        version = db.latest_twin_version(pseudonym)
        if version is None:
            raise StoreError(
                f"patient {pseudonym} has no twin yet: run `cartwin twin update {pseudonym}`"
            )
        record = db.load_record(pseudonym)
    if output.is_dir():
        raise DataError(f"report output {output} is a folder; give a file name such as report.html")
    html = render_report(record, version)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_suffix(output.suffix + ".tmp")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(output)
    return {"report": str(output), **_version_summary(version)}


# -- export / reproduce ---------------------------------------------------------
@app.command("export")
def export_cmd(
    patient: str = typer.Argument(..., help="Source id or pseudonym."),
    fmt: str = typer.Option(
        ..., "--format",
        help="fhir, phenopacket, omop, omop-duckdb, ro-crate, csv, xlsx or parquet.",
    ),
    output: Path = typer.Option(..., "-o", "--output", help="File or folder to write."),
    layout: str = typer.Option("long", help="Table layout for csv/xlsx/parquet: long or wide."),
    store: Optional[str] = StoreOption,
    as_json: bool = JsonOption,
) -> None:
    """Export a patient's latest twin version (and data) in a standard format."""
    _configure(as_json)
    from cartwin.errors import StoreError
    from cartwin.io.exports import export_patient
    from cartwin.store import open_store

    try:
        with open_store(store, read_only=True) as db:
            pseudonym = db.resolve_patient(patient, _optional_key())
            version = db.latest_twin_version(pseudonym)
            record = db.load_record(pseudonym)
        if version is None:
            raise StoreError(
                f"patient {pseudonym} has no twin yet: run `cartwin twin update {pseudonym}`"
            )
        result = export_patient(record, version, fmt, output, layout=layout)
    except CartwinError as exc:
        _fail(exc)
    if as_json:
        _emit_json({"pseudonym": pseudonym, "version_id": version.version_id, **result})
    else:
        out.print(f"{fmt} export of {pseudonym} (twin version {version.version_id}) written to {output}")


@app.command("reproduce")
def reproduce_cmd(
    crate: Path = typer.Argument(..., help="RO-Crate folder written by `cartwin export --format ro-crate`."),
    as_json: bool = JsonOption,
) -> None:
    """Re-run a twin version from its RO-Crate and compare every output."""
    _configure(as_json)
    from cartwin.io.rocrate import reproduce_rocrate

    try:
        result = reproduce_rocrate(crate)
    except CartwinError as exc:
        _fail(exc)
    if as_json:
        _emit_json(_as_dict(result))
    else:
        out.print(result.summary())
    if not result.ok:
        raise typer.Exit(code=1)


# -- patients -----------------------------------------------------------------
@app.command("patients")
def patients_cmd(store: Optional[str] = StoreOption, as_json: bool = JsonOption) -> None:
    """List the patients in the store (pseudonyms only)."""
    _configure(as_json)
    from cartwin.store import open_store

    try:
        with open_store(store, read_only=True) as db:
            persons = [_as_dict(p) for p in db.persons()]
    except CartwinError as exc:
        _fail(exc)
    if as_json:
        _emit_json(persons)
        return
    if not persons:
        out.print("no patients in the store")
        return
    columns = ("pseudonym", "n_observations", "n_events", "n_twin_versions",
               "latest_version", "disease", "product")
    table = Table("pseudonym", "obs", "events", "versions", "latest version",
                  "disease", "product")
    table.columns[0].no_wrap = True
    for person in persons:
        table.add_row(*(
            "" if person.get(c) is None else escape(str(person.get(c))) for c in columns
        ))
    out.print(table)


# -- demo ---------------------------------------------------------------------
@app.command("demo")
def demo_cmd(
    outdir: Path = typer.Option(Path("cartwin-demo"), "-o", "--outdir", help="Folder for the demo store and report."),
    graph: bool = GraphOption,
    as_json: bool = JsonOption,
) -> None:
    """Import the bundled synthetic patient, build its twin, write its report."""
    _configure(as_json)
    from cartwin.demo import run_demo

    try:
        result = run_demo(outdir, progress=None if as_json else console)
        if graph:
            result.update(_demo_graph(result, None if as_json else console))
    except CartwinError as exc:
        _fail(exc)
    if as_json:
        _emit_json(result)
        return
    out.print(f"demo store:  {result['store']}")
    out.print(f"demo report: {result['report']}")
    out.print(f"patient pseudonym: {result['pseudonym']}  twin version: {result['version_id']}")


def _demo_graph(result: dict[str, Any], progress) -> dict[str, Any]:
    """A graph twin version of the demo patient on top of the demo's; new report."""
    from cartwin.report import render_report
    from cartwin.store import open_store
    from cartwin.twin.build import TwinSettings, build_twin

    if progress is not None:
        progress.print("[dim]-[/] calibrating the model graph (first run compiles it)")
    with open_store(Path(result["store"])) as store:
        record = store.load_record(result["pseudonym"])
        parent = store.latest_twin_version(result["pseudonym"])
        version = build_twin(record, settings=TwinSettings(graph=True), parent=parent)
        store.save_twin_version(version)
    Path(result["report"]).write_text(render_report(record, version), encoding="utf-8")
    return {
        "version_id": version.version_id,
        "graph_status": version.outputs["graph"].get("status"),
    }


# -- validate -----------------------------------------------------------------
@app.command("validate")
def validate_cmd(
    output: Path = typer.Option(Path("validation.html"), "-o", "--output", help="HTML file to write."),
    as_json: bool = JsonOption,
) -> None:
    """Run the model validation checks and write their HTML report."""
    _configure(as_json)
    from cartwin.errors import DataError
    from cartwin.graph.validation import run_validation, validation_report_html

    checks = run_validation()
    if output.is_dir():
        _fail(DataError(f"validation output {output} is a folder; give a file name"))
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(validation_report_html(checks), encoding="utf-8")
    passed = sum(c.passed for c in checks)
    if as_json:
        _emit_json({"report": str(output), "passed": passed, "total": len(checks),
                    "checks": [c.to_dict() for c in checks]})
    else:
        out.print(f"{passed} of {len(checks)} checks passed; report written to {output}")
    if passed < len(checks):
        raise typer.Exit(code=1)


@app.callback(invoke_without_command=True)
def main(
    version: bool = typer.Option(False, "--version", help="Print the version and exit."),
) -> None:
    """cartwin command line."""
    if version:
        out.print(__version__)
        raise typer.Exit()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
