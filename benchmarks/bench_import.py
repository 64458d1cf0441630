"""Throughput of the FHIR import: parse + validate + map, in observations/s.

Claim measured: :func:`cartwin.io.import_fhir` reads a transaction Bundle of
at least 50 000 Observations (labs and vitals, a few patients) at >= 20 000
observations per second, validation with the ``fhir.resources`` R4B models of
every resource included.

The bundle is generated in memory with a seeded generator and written to a
temporary file; best and median of ``--repeat`` runs are printed (best is the
least disturbed by other load on the machine). Phases are also timed alone,
so that a shortfall is attributed: JSON parsing, ``fhir.resources``
validation (plain ``model_validate`` on each resource dict, and with the
reuse of repeated elements that the importer does), and the whole import.
All phases run with the cyclic garbage collector paused, as the import does.

Run::

    .venv/bin/python benchmarks/bench_import.py [--observations 50000]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

#: (LOINC, quantity, unit, typical value, relative spread) of generated labs/vitals.
_PANEL = (
    ("1988-5", "mg/L", 40.0, 1.0),
    ("1988-5", "mg/dL", 4.0, 1.0),
    ("777-3", "10*9/L", 150.0, 0.5),
    ("777-3", "/uL", 150000.0, 0.5),
    ("751-8", "10*3/uL", 2.5, 0.8),
    ("718-7", "g/dL", 10.5, 0.2),
    ("718-7", "mmol/L", 6.5, 0.2),
    ("2160-0", "umol/L", 80.0, 0.3),
    ("2276-4", "ng/mL", 900.0, 1.0),
    ("2532-0", "U/L", 300.0, 0.5),
    ("26881-3", "pg/mL", 50.0, 1.5),
    ("8310-5", "Cel", 37.5, 0.02),
    ("8310-5", "[degF]", 99.5, 0.02),
    ("8867-4", "/min", 90.0, 0.2),
    ("9279-1", "/min", 18.0, 0.2),
    ("59408-5", "%", 96.0, 0.02),
)


def make_bundle(n_observations: int, n_patients: int, seed: int = 20250101) -> dict:
    """A transaction Bundle with ``n_observations`` Observations (+ patients).

    Every 10th Observation is a blood-pressure panel (85354-9) with systolic
    and diastolic components; every 25th CRP is below a limit (``<``).
    """
    rng = np.random.default_rng(seed)
    patients = [str(uuid.UUID(int=int(rng.integers(2**62)))) for _ in range(n_patients)]
    entries = [_patient_entry(pid, i) for i, pid in enumerate(patients)]
    for i in range(n_observations):
        pid = patients[i % n_patients]
        minutes = int(i // n_patients) * 7
        entries.append(_observation_entry(rng, i, pid, minutes))
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def _patient_entry(pid: str, index: int) -> dict:
    resource = {
        "resourceType": "Patient",
        "id": pid,
        "name": [{"family": f"Bench{index}", "given": ["Test"]}],
        "gender": "female" if index % 2 else "male",
        "birthDate": f"{1950 + index}-03-0{1 + index % 9}",
    }
    return {
        "fullUrl": f"urn:uuid:{pid}",
        "resource": resource,
        "request": {"method": "POST", "url": "Patient"},
    }


def _observation_entry(rng, index: int, pid: str, minutes: int) -> dict:
    oid = f"{index:08d}-0000-4000-8000-000000000000"
    hours, mins = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    stamp = (
        f"2024-{1 + days // 28:02d}-{1 + days % 28:02d}T{hours:02d}:{mins:02d}:00+01:00"
    )
    resource = {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "subject": {"reference": f"urn:uuid:{pid}"},
        "effectiveDateTime": stamp,
    }
    if index % 10 == 0:
        resource["code"] = _concept("85354-9", "Blood pressure panel")
        resource["component"] = [
            {
                "code": _concept("8480-6", "Systolic"),
                "valueQuantity": _quantity(rng.normal(120, 15), "mm[Hg]"),
            },
            {
                "code": _concept("8462-4", "Diastolic"),
                "valueQuantity": _quantity(rng.normal(75, 10), "mm[Hg]"),
            },
        ]
    else:
        code, unit, typical, spread = _PANEL[index % len(_PANEL)]
        value = typical * float(np.exp(rng.normal(0.0, spread)))
        resource["code"] = _concept(code, code)
        resource["valueQuantity"] = _quantity(value, unit)
        if code == "1988-5" and index % 25 == 1:
            resource["valueQuantity"] = {**_quantity(0.5, unit), "comparator": "<"}
    return {
        "fullUrl": f"urn:uuid:{oid}",
        "resource": resource,
        "request": {"method": "POST", "url": "Observation"},
    }


def _concept(code: str, display: str) -> dict:
    return {
        "coding": [{"system": "http://loinc.org", "code": code, "display": display}]
    }


def _quantity(value: float, unit: str) -> dict:
    return {
        "value": round(float(value), 3),
        "unit": unit,
        "system": "http://unitsofmeasure.org",
        "code": unit,
    }


def _times(function, repeat: int) -> tuple[float, float]:
    """(best, median) wall time of ``repeat`` calls, cyclic GC paused."""
    times = []
    for _ in range(repeat):
        gc.collect()
        gc.disable()
        try:
            start = time.perf_counter()
            function()
            times.append(time.perf_counter() - start)
        finally:
            gc.enable()
    return min(times), statistics.median(times)


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{cpu}; {os.cpu_count()} logical CPUs; {platform.system()} "
        f"{platform.release()}; Python {platform.python_version()}"
    )


def _import_and_store(path: Path, folder: Path) -> None:
    """What ``cartwin import`` does: parse the file, write one transaction."""
    from cartwin.io import import_fhir
    from cartwin.store import open_store

    parsed = import_fhir(path, key=b"bench-key")
    store_path = folder / f"store-{uuid.uuid4().hex}.duckdb"
    with open_store(store_path) as store:
        store.import_records(
            parsed.records,
            source_name=parsed.source_name,
            source_sha256=parsed.source_sha256,
        )


def main(argv: list[str] | None = None) -> None:
    """Generate the bundle, time each phase and print the results."""
    from fhir.resources import __version__ as fhir_resources_version
    from fhir.resources.R4B import get_fhir_model_class

    from cartwin.io import import_fhir
    from cartwin.io._validate import ResourceValidator

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--observations", type=int, default=50_000)
    parser.add_argument("--patients", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)

    bundle = make_bundle(args.observations, args.patients)
    raw = json.dumps(bundle).encode("utf-8")
    resources = [e["resource"] for e in bundle["entry"]]

    def plain_validation():
        for resource in resources:
            get_fhir_model_class(resource["resourceType"]).model_validate(resource)

    def reuse_validation():
        validator = ResourceValidator(site_utc_offset_min=None)
        for resource in resources:
            validator.issues(resource)

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench-bundle.json"
        path.write_bytes(raw)
        result = import_fhir(path, key=b"bench-key")  # warm-up: imports, models, pint
        phases = {
            "json.loads": _times(lambda: json.loads(raw), args.repeat),
            "validate, plain": _times(plain_validation, args.repeat),
            "validate, reuse": _times(reuse_validation, args.repeat),
            "import_fhir": _times(
                lambda: import_fhir(path, key=b"bench-key"), args.repeat
            ),
            "import + store": _times(
                lambda: _import_and_store(path, Path(tmp)), args.repeat
            ),
        }

    n_resources = args.observations
    n_values = result.report.n_observations
    print(f"machine        : {_machine()}")
    print(
        f"fhir.resources : {fhir_resources_version} (R4B models); load average "
        f"{os.getloadavg()[0]:.2f}"
    )
    print(
        f"bundle         : {n_resources} Observation resources + "
        f"{args.patients} Patients, "
        f"{len(raw) / 1e6:.1f} MB; {n_values} observations produced (BP panels give 2)"
    )
    print("phase            best s  median s   Observation resources/s (best)")
    for name, (best, median) in phases.items():
        print(f"{name:<16} {best:7.3f}  {median:8.3f}   {n_resources / best:12,.0f}")
    best_import = phases["import_fhir"][0]
    print(f"observations/s : {n_values / best_import:,.0f} (best import)")
    best_stored = phases["import + store"][0]
    print(
        f"end to end     : {n_values / best_stored:,.0f} observations/s "
        "(parse, validate, map, DuckDB transaction; `cartwin import` does this)"
    )
    target = 20_000
    verdict = "meets" if n_resources / best_import >= target else "MISSES"
    print(f"target         : >= {target:,} Observation resources/s -> {verdict}")


if __name__ == "__main__":
    main()
