"""The bundled demo: one synthetic LBCL patient from FHIR bundle to report.

``cartwin demo`` imports ``data/demo_patient.json`` (made by
``scripts/make_demo_bundle.py``; synthetic, see its docstring) into a fresh
DuckDB store in the output folder, calibrates the patient's twin and writes the
HTML report beside it. The demo always pseudonymises with the fixed demo key
(:data:`cartwin.record.pseudonym.DEMO_KEY`), which is fit only for synthetic
data; real imports need a key of their own.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

#: File name of the bundled demo patient inside ``cartwin.data``.
DEMO_BUNDLE = "demo_patient.json"


def demo_bundle_path() -> Path:
    """Path of the bundled demo FHIR bundle."""
    return Path(str(resources.files("cartwin.data").joinpath(DEMO_BUNDLE)))


def run_demo(outdir: Path, *, progress: Any = None) -> dict[str, Any]:
    """Import, calibrate and report the demo patient into ``outdir``.

    Parameters
    ----------
    outdir : Path
        Folder for ``cartwin-demo.duckdb`` and ``report.html`` (created).
        An existing demo store there is reused; the import is idempotent.
    progress : rich.console.Console, optional
        Where to print the steps as they run.

    Returns
    -------
    dict
        Paths written, the pseudonym, the twin version id and the import summary.
    """
    from cartwin.io.formats import ReadOptions, read_source
    from cartwin.record.pseudonym import DEMO_KEY, key_fingerprint
    from cartwin.report import render_report
    from cartwin.store import open_store
    from cartwin.twin.build import build_twin

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    store_path = outdir / "cartwin-demo.duckdb"
    report_path = outdir / "report.html"

    _say(progress, f"importing {demo_bundle_path().name}")
    parsed = read_source(demo_bundle_path(), "fhir", key=DEMO_KEY, options=ReadOptions())
    with open_store(store_path) as store:
        store.check_key(key_fingerprint(DEMO_KEY))
        summary = store.import_records(
            parsed.records,
            source_name=parsed.source_name,
            source_sha256=parsed.source_sha256,
            report=parsed.report.to_dict(),
        )
        pseudonym = parsed.records[0].facts.pseudonym
        record = store.load_record(pseudonym)
        _say(progress, "calibrating the twin (first run compiles the model)")
        version = build_twin(record, parent=store.latest_twin_version(pseudonym))
        store.save_twin_version(version)
    _say(progress, "writing the report")
    report_path.write_text(render_report(record, version), encoding="utf-8")
    summary_dict = summary.to_dict() if hasattr(summary, "to_dict") else vars(summary)
    return {
        "store": str(store_path),
        "report": str(report_path),
        "pseudonym": pseudonym,
        "version_id": version.version_id,
        "import": summary_dict,
        "crs_max_grade": version.outputs["crs"].get("max_grade"),
        "kinetics_status": version.outputs["kinetics"].get("status"),
    }


def _say(console: Any, text: str) -> None:
    if console is not None:
        console.print(f"[dim]-[/] {text}")
