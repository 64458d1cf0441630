"""Run an in silico trial in chunks, locally or on a Dask cluster, resumably.

A trial of ``N`` virtual patients per simulated arm is cut into chunks of at
most ``chunk_size`` patients (:func:`plan_chunks`). Each chunk is simulated by
``simulate_chunk(trial, arm_name, chunk, size, seed)``
(:mod:`cartwin.trial.simulate`) and written at once to
``OUTDIR/chunks/<arm>-<chunk:05d>.parquet``. When every chunk is on disk the
runner joins them into ``OUTDIR/outcomes.parquet``, computes the endpoints
(:mod:`cartwin.trial.endpoints`) and the validation against a published trial
(:func:`cartwin.trial.validation.validate` on the endpoints), and writes
``OUTDIR/endpoints.json`` and
``OUTDIR/report.html`` (:mod:`cartwin.trial.report`).

Output folder::

    OUTDIR/manifest.json      trial digest, seed, N, chunk size, cartwin version,
                              and one entry per run (backend, chunks run, time)
    OUTDIR/chunks/*.parquet   finished chunks (kept; skipped on restart)
    OUTDIR/outcomes.parquet   one row per virtual patient, arms in trial order
    OUTDIR/endpoints.json     endpoints, validation, population, provenance, trial
    OUTDIR/report.html        standalone HTML report

Reproducibility. The seed of a chunk is drawn from
``numpy.random.SeedSequence(trial.seed, spawn_key=(arm_index, chunk))``, so it
depends only on the trial seed, the arm's position in the trial file and the
chunk index: the outcomes are identical whichever backend, number of workers
or order of execution. They do depend on the chunk size (the patients of one
chunk share a random stream), which is why the chunk size is part of the
manifest.

Resumability. A chunk is written to a temporary file in ``chunks/`` and
renamed (:func:`os.replace`), so a killed run leaves either a whole chunk or
none; stray temporary files are removed on the next start. On restart, a chunk
whose file is readable and holds the planned number of rows is skipped, if the
manifest matches the trial digest, seed, N, chunk size and cartwin version; a
mismatch raises :class:`TrialRunError` naming the field unless ``force=True``
(which discards the finished chunks).

Dask. ``scheduler="tcp://host:port"`` connects a :class:`distributed.Client`
(time-out :data:`CONNECT_TIMEOUT_S`); one task per pending chunk is submitted
and each result is written by this process as it arrives, so the workers need
no shared disk. The workers must have the same cartwin version installed
(checked before submitting).

Known limits: two runs must not share an output folder at the same time; the
chunk files are not fsync'ed, so a power loss (not a killed process) can leave
a truncated chunk, which is detected by its row count and recomputed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import json
import logging
import math
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from cartwin import __version__
from cartwin.errors import CartwinError

if TYPE_CHECKING:  # pragma: no cover
    from cartwin.trial.config import Trial

log = logging.getLogger(__name__)

#: Default number of virtual patients per chunk.
DEFAULT_CHUNK_SIZE = 10_000
#: Seconds allowed to connect to a Dask scheduler.
CONNECT_TIMEOUT_S = 5.0
#: Version of the layout of ``manifest.json``.
MANIFEST_FORMAT = 1
#: Manifest fields that must match for finished chunks to be reused, in the
#: order they are compared (the digest covers the whole trial file, so the
#: plainer fields come first to give the clearer message).
MATCHED_FIELDS = (
    "seed",
    "patients_per_arm",
    "chunk_size",
    "trial_digest",
    "cartwin_version",
)

SimulateChunk = Callable[..., pd.DataFrame]


class TrialRunError(CartwinError):
    """A trial run cannot start or go on: output folder, manifest or cluster."""


@dataclass(frozen=True)
class ChunkSpec:
    """One chunk of virtual patients of one arm.

    Attributes
    ----------
    arm : str
        Arm name, as in the trial file.
    arm_index : int
        Position of the arm in the trial file (0-based; observed arms count).
    chunk : int
        Chunk index within the arm (0-based).
    first_patient : int
        Index of the chunk's first patient within the arm.
    size : int
        Number of patients in the chunk (the last chunk may be smaller).
    seed : int
        Seed of the chunk, from :func:`chunk_seed`.
    """

    arm: str
    arm_index: int
    chunk: int
    first_patient: int
    size: int
    seed: int

    @property
    def filename(self) -> str:
        """File name of the chunk in ``chunks/``: ``<arm>-<chunk:05d>.parquet``."""
        return f"{safe_arm_name(self.arm)}-{self.chunk:05d}.parquet"


@dataclass(frozen=True, eq=False)
class TrialResult:
    """Outcomes, endpoints and provenance of a finished trial run.

    Attributes
    ----------
    trial : Trial
        The trial as run (overrides of N and seed applied).
    outcomes : pandas.DataFrame
        One row per virtual patient of the simulated arms (columns: see the
        trial contract), arms in trial order, then by patient.
    endpoints : dict
        Output of :func:`cartwin.trial.endpoints.compute_endpoints`.
    validation : list of dict
        Simulated against published rows (empty without ``validate_against``).
    population : dict
        Calibration summary of the virtual population.
    provenance : dict
        cartwin version, seed, N, chunk size, backend, chunk counts, elapsed
        seconds, trial digest, notes.
    outdir : pathlib.Path
        Output folder.
    """

    trial: Trial
    outcomes: pd.DataFrame
    endpoints: dict[str, Any]
    validation: list[dict[str, Any]]
    population: dict[str, Any]
    provenance: dict[str, Any]
    outdir: Path

    @property
    def paths(self) -> dict[str, str]:
        """Files written by the run, by role (``report`` only when written)."""
        paths = {role: self.outdir / name for role, name in _OUTPUT_FILES.items()}
        paths["chunks"] = self.outdir / "chunks"
        return {k: str(p) for k, p in paths.items() if k != "report" or p.exists()}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary: endpoints, validation, population, provenance, paths."""
        return _json_ready(
            {
                "trial": _trial_dict(self.trial),
                "endpoints": self.endpoints,
                "validation": self.validation,
                "population": self.population,
                "provenance": self.provenance,
                "paths": self.paths,
            }
        )


_OUTPUT_FILES = {
    "manifest": "manifest.json",
    "outcomes": "outcomes.parquet",
    "endpoints": "endpoints.json",
    "report": "report.html",
}


# -- planning -----------------------------------------------------------------
def safe_arm_name(name: str) -> str:
    """Arm name made safe for a file name: runs of other characters become ``_``.

    Examples
    --------
    >>> safe_arm_name("axi-cel 2e6/kg")
    'axi-cel_2e6_kg'
    """
    return re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_") or "arm"


def chunk_seed(trial_seed: int, arm_index: int, chunk: int) -> int:
    """Seed of one chunk, independent of backend, workers and execution order.

    Parameters
    ----------
    trial_seed : int
        Seed of the trial (non-negative).
    arm_index, chunk : int
        Position of the arm in the trial file and chunk index.

    Returns
    -------
    int
        A seed in ``[0, 2**63)``, drawn from
        ``SeedSequence(trial_seed, spawn_key=(arm_index, chunk))``.
    """
    sequence = np.random.SeedSequence(trial_seed, spawn_key=(arm_index, chunk))
    return int(sequence.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def plan_chunks(trial: Trial, chunk_size: int) -> list[ChunkSpec]:
    """Chunks of every simulated arm, in arm order then chunk order.

    Parameters
    ----------
    trial : Trial
        The trial; observed arms (``arm.simulated`` false) get no chunk.
    chunk_size : int
        Most patients per chunk (at least 1).

    Raises
    ------
    TrialRunError
        When ``chunk_size`` is below 1, or two arm names give one file name.
    """
    if (
        isinstance(chunk_size, bool)
        or not isinstance(chunk_size, int)
        or chunk_size < 1
    ):
        raise TrialRunError(
            f"chunk size must be a whole number >= 1, got {chunk_size!r}"
        )
    _check_file_names(trial)
    n = int(trial.patients_per_arm)
    plan = []
    for arm_index, arm in enumerate(trial.arms):
        if not arm.simulated:
            continue
        for chunk in range(math.ceil(n / chunk_size)):
            first = chunk * chunk_size
            seed = chunk_seed(int(trial.seed), arm_index, chunk)
            size = min(chunk_size, n - first)
            plan.append(ChunkSpec(arm.name, arm_index, chunk, first, size, seed))
    return plan


def _check_file_names(trial: Trial) -> None:
    seen: dict[str, str] = {}
    for arm in trial.arms:
        safe = safe_arm_name(arm.name).lower()  # case-insensitive file systems
        if safe in seen:
            raise TrialRunError(
                f"arms {seen[safe]!r} and {arm.name!r} of trial {trial.name!r} "
                f"give the same chunk file name {safe!r}; rename one of them"
            )
        seen[safe] = arm.name


# -- running ------------------------------------------------------------------
def run_trial(
    trial: Trial,
    outdir: str | os.PathLike[str],
    *,
    scheduler: str | None = None,
    cluster_client: Any = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: bool = True,
    force: bool = False,
    simulate: SimulateChunk | None = None,
    write_report: bool = True,
) -> TrialResult:
    """Simulate every chunk of a trial (skipping finished ones), then analyse it.

    Parameters
    ----------
    trial : Trial
        The trial to run (apply ``--patients``/``--seed`` with
        ``trial.with_overrides`` first).
    outdir : path
        Output folder; created if missing (see the module docstring).
    scheduler : str, optional
        Address of a Dask scheduler, ``tcp://host:port``. Default: run the
        chunks in this process, one after the other.
    cluster_client : distributed.Client or distributed.LocalCluster, optional
        A Dask client (used, not closed) or cluster (a client is opened to it
        and closed), instead of ``scheduler``.
    chunk_size : int
        Most patients per chunk. Part of the manifest: results depend on it.
    progress : bool
        Show a progress bar (patients done per arm) on stderr when it is a
        terminal.
    force : bool
        Discard finished chunks of another run instead of raising.
    simulate : callable, optional
        ``simulate(trial, arm_name, chunk, size, seed) -> DataFrame``; default
        :func:`cartwin.trial.simulate.simulate_chunk`. With Dask it must be
        importable by the workers (defined at module level).
    write_report : bool
        Write ``report.html`` (off for benchmarks).

    Returns
    -------
    TrialResult

    Raises
    ------
    TrialRunError
        Output folder is a file; the manifest of a previous run differs (the
        message names the field); the scheduler cannot be reached.
    """
    started = time.monotonic()
    outdir = Path(outdir)
    plan = plan_chunks(trial, chunk_size)
    if scheduler is not None:
        _check_address(scheduler)
    if simulate is None:  # cartwin's engine: check what it reads before writing
        from cartwin.trial.simulate import check_trial

        check_trial(trial)
    manifest = _prepare_outdir(outdir, _manifest_for(trial, chunk_size), force)
    pending = _pending_chunks(outdir / "chunks", plan)
    run = {
        "started_at": _now(),
        "chunks_total": len(plan),
        "chunks_done_before": len(plan) - len(pending),
        "chunks_run": len(pending),
    }
    simulate = simulate or _default_simulate()
    with _progress_bar(trial, plan, pending, progress) as advance:
        backend = _simulate_pending(
            trial,
            outdir / "chunks",
            pending,
            simulate,
            advance,
            scheduler=scheduler,
            cluster_client=cluster_client,
        )
    run.update(backend, elapsed_simulation_s=round(time.monotonic() - started, 3))
    _write_json(
        outdir / "manifest.json", {**manifest, "runs": [*manifest["runs"], run]}
    )
    provenance = {
        "cartwin_version": __version__,
        "trial_name": trial.name,
        "trial_digest": manifest["trial_digest"],
        "trial_source": getattr(trial, "source", None),
        "seed": manifest["seed"],
        "patients_per_arm": manifest["patients_per_arm"],
        "chunk_size": chunk_size,
        "engine": _qualified_name(simulate),
        **run,
    }
    return _finish(trial, outdir, plan, provenance, started, write_report)


#: Qualified name of cartwin's engine, the default ``simulate``.
DEFAULT_ENGINE = "cartwin.trial.simulate.simulate_chunk"


def _default_simulate() -> SimulateChunk:
    from cartwin.trial.simulate import simulate_chunk

    return simulate_chunk


def _qualified_name(function: Any) -> str:
    module = getattr(function, "__module__", None)
    name = getattr(function, "__qualname__", type(function).__qualname__)
    return f"{module}.{name}" if module else name


def _simulate_pending(
    trial, chunks_dir, pending, simulate, advance, *, scheduler, cluster_client
) -> dict[str, Any]:
    """Run the pending chunks on the chosen backend; describe the backend."""
    if scheduler is not None and cluster_client is not None:
        raise TrialRunError("give a Dask scheduler address or a client, not both")
    if scheduler is None and cluster_client is None:
        for spec in pending:
            _write_chunk(chunks_dir, spec, _simulate_task(simulate, trial, spec))
            advance(spec)
        return {"backend": "local", "workers": 1}
    with _dask_client(scheduler, cluster_client) as client:
        workers = _check_workers(client)
        _run_on_dask(client, trial, chunks_dir, pending, simulate, advance)
        return {"backend": f"dask {client.scheduler.address}", "workers": workers}


def _simulate_task(
    simulate: SimulateChunk, trial: Trial, spec: ChunkSpec
) -> pd.DataFrame:
    """Simulate one chunk and number its rows (runs on a Dask worker too).

    The runner, not ``simulate``, owns the ``arm``, ``patient`` (index within
    the arm: ``first_patient + 0..size-1``) and ``chunk`` columns.
    """
    try:
        frame = simulate(trial, spec.arm, spec.chunk, spec.size, spec.seed)
    except Exception as exc:
        exc.add_note(f"while simulating chunk {spec.chunk} of arm {spec.arm!r}")
        raise
    if not isinstance(frame, pd.DataFrame) or len(frame) != spec.size:
        rows = len(frame) if isinstance(frame, pd.DataFrame) else type(frame).__name__
        raise TrialRunError(
            f"simulate returned {rows} rows for chunk {spec.chunk} of arm "
            f"{spec.arm!r}; expected a DataFrame of {spec.size} rows"
        )
    frame = frame.reset_index(drop=True)
    frame["arm"] = spec.arm
    frame["patient"] = np.arange(
        spec.first_patient, spec.first_patient + spec.size, dtype=np.int64
    )
    frame["chunk"] = np.int64(spec.chunk)
    return frame


# -- output folder, manifest, chunks --------------------------------------------
def _manifest_for(trial: Trial, chunk_size: int) -> dict[str, Any]:
    return {
        "format": MANIFEST_FORMAT,
        "trial_name": trial.name,
        "trial_digest": trial.digest(),
        "seed": int(trial.seed),
        "patients_per_arm": int(trial.patients_per_arm),
        "chunk_size": int(chunk_size),
        "cartwin_version": __version__,
        "simulated_arms": [arm.name for arm in trial.arms if arm.simulated],
        "created_at": _now(),
        "runs": [],
    }


def _prepare_outdir(
    outdir: Path, manifest: dict[str, Any], force: bool
) -> dict[str, Any]:
    """Create or check the output folder; return the manifest to keep."""
    if outdir.exists() and not outdir.is_dir():
        raise TrialRunError(f"trial output {outdir} is a file; give a folder")
    if force:
        _discard_previous(outdir)
    previous = _read_manifest(outdir, manifest)
    if previous is not None:
        manifest = {
            **manifest,
            "created_at": previous.get("created_at"),
            "runs": list(previous.get("runs", [])),
        }
    try:
        _start_folder(outdir / "chunks")
        _write_json(outdir / "manifest.json", manifest)
    except OSError as exc:
        raise TrialRunError(f"cannot write the trial output {outdir}: {exc}") from exc
    return manifest


def _start_folder(chunks_dir: Path) -> None:
    chunks_dir.mkdir(parents=True, exist_ok=True)
    for stray in chunks_dir.glob("*.tmp"):
        log.info("removing %s left by an interrupted run", stray)
        stray.unlink(missing_ok=True)


def _read_manifest(outdir: Path, expected: dict[str, Any]) -> dict[str, Any] | None:
    """The previous run's manifest, after checking it matches (None if absent)."""
    path, chunks_dir = outdir / "manifest.json", outdir / "chunks"
    if not path.exists():
        if any(chunks_dir.glob("*.parquet")):
            raise TrialRunError(
                f"{chunks_dir} holds chunks but {path} is missing; they cannot be "
                "checked against this trial: use another folder, or --force "
                "(force=True in Python)"
            )
        return None
    try:
        previous = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TrialRunError(
            f"cannot read {path}: {exc}; use --force to start over"
        ) from exc
    _check_manifest(path, previous, expected)
    return previous


def _check_manifest(path: Path, previous: Any, expected: dict[str, Any]) -> None:
    """Raise naming the first field of :data:`MATCHED_FIELDS` that differs."""
    if not isinstance(previous, dict):
        raise TrialRunError(
            f"{path} is not a trial manifest; use --force to start over"
        )
    for name in MATCHED_FIELDS:
        if previous.get(name) != expected[name]:
            done = len(list(path.parent.joinpath("chunks").glob("*.parquet")))
            raise TrialRunError(
                f"{path} belongs to another run: {name} is {previous.get(name)!r} "
                f"there but {expected[name]!r} now; use another output folder, or "
                f"--force (force=True in Python) to discard its {done} finished chunks"
            )


def _discard_previous(outdir: Path) -> None:
    shutil.rmtree(outdir / "chunks", ignore_errors=True)
    for name in ("manifest.json", *_OUTPUT_FILES.values()):
        (outdir / name).unlink(missing_ok=True)


def _pending_chunks(chunks_dir: Path, plan: Sequence[ChunkSpec]) -> list[ChunkSpec]:
    """Chunks without a readable file of the planned number of rows."""
    import pyarrow.parquet as pq

    pending = []
    for spec in plan:
        path = chunks_dir / spec.filename
        try:
            done = path.is_file() and pq.read_metadata(path).num_rows == spec.size
            if done:  # the right arm and patients, not a file copied over it
                ids = pq.read_table(path, columns=["arm", "patient"]).to_pandas()
                done = set(ids["arm"]) == {spec.arm} and (
                    int(ids["patient"].min()) == spec.first_patient
                )
                if not done:
                    log.warning("recomputing %s: rows of another chunk", path)
        except (OSError, ValueError, KeyError) as exc:  # truncated or foreign
            log.warning("recomputing %s: %s", path, exc)
            done = False
        if not done:
            pending.append(spec)
    return pending


def _write_chunk(chunks_dir: Path, spec: ChunkSpec, frame: pd.DataFrame) -> None:
    _write_parquet(frame, chunks_dir / spec.filename)


def _write_parquet(frame: pd.DataFrame, path: Path) -> None:
    """Write via a temporary file in the same folder, then rename (atomic)."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    frame.to_parquet(tmp, engine="pyarrow", index=False)
    os.replace(tmp, path)


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    text = json.dumps(_json_ready(data), indent=2, allow_nan=False, default=str)
    tmp.write_text(text + "\n", encoding="utf-8")
    os.replace(tmp, path)


# -- Dask backend ---------------------------------------------------------------
@contextlib.contextmanager
def _dask_client(scheduler: str | None, cluster_client: Any) -> Iterator[Any]:
    """The client to use; one opened here is closed on exit."""
    if cluster_client is not None and hasattr(cluster_client, "submit"):
        yield cluster_client  # the caller's client: not ours to close
        return
    if cluster_client is not None:
        address = getattr(cluster_client, "scheduler_address", None)
        if not isinstance(address, str):
            raise TrialRunError(
                f"cluster_client must be a distributed Client or cluster, "
                f"got {type(cluster_client).__name__}"
            )
    else:
        address = _check_address(scheduler)
    client = _connect(address)
    try:
        yield client
    finally:
        client.close()


def _check_address(scheduler: str) -> str:
    match = re.fullmatch(r"tcp://[^\s/:]+:(\d{1,5})", scheduler or "")
    if not match or not 0 < int(match.group(1)) < 65536:
        raise TrialRunError(
            f"Dask scheduler address {scheduler!r} is not of the form "
            "tcp://HOST:PORT (port 1-65535)"
        )
    return scheduler


def _connect(address: str) -> Any:
    from distributed import Client

    try:
        return Client(address, timeout=f"{CONNECT_TIMEOUT_S}s", set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise TrialRunError(
            f"cannot reach the Dask scheduler at {address} within "
            f"{CONNECT_TIMEOUT_S:g} s ({exc}); is it running, and is the address right?"
        ) from exc


def _check_workers(client: Any) -> int:
    """Number of workers now; raise if one runs another cartwin version."""
    try:
        versions = client.run(_cartwin_version)
    except Exception as exc:  # e.g. cartwin not importable on a worker
        raise TrialRunError(
            f"the Dask workers of {client.scheduler.address} cannot run cartwin: {exc}"
        ) from exc
    for worker, version in versions.items():
        if version != __version__:
            raise TrialRunError(
                f"Dask worker {worker} runs cartwin {version}, this process "
                f"{__version__}; install the same version on every worker"
            )
    if not versions:
        log.warning("the Dask cluster %s has no worker yet", client.scheduler.address)
    return len(versions)


def _cartwin_version() -> str:
    from cartwin import __version__ as version

    return version


def _run_on_dask(client, trial, chunks_dir, pending, simulate, advance) -> None:
    """Submit one task per chunk; write each result here as it arrives."""
    from distributed import as_completed

    if _qualified_name(simulate) == DEFAULT_ENGINE:  # calibrate once, here
        from cartwin.trial.simulate import population_summary, prime_population

        client.run(prime_population, trial, population_summary(trial))
    futures = {
        client.submit(_simulate_task, simulate, trial, spec, pure=False): spec
        for spec in pending
    }
    try:
        for future in as_completed(list(futures), loop=client.loop):
            spec = futures.pop(future)
            _write_chunk(chunks_dir, spec, future.result())
            future.release()
            advance(spec)
    finally:
        if futures:  # an error or an interrupt: do not leave work on the cluster
            client.cancel(list(futures))


# -- progress -------------------------------------------------------------------
@contextlib.contextmanager
def _progress_bar(
    trial, plan, pending, enabled: bool
) -> Iterator[Callable[[ChunkSpec], None]]:
    """A callback advancing a per-arm bar of patients done (no-op when hidden)."""
    from rich.console import Console

    console = Console(stderr=True)
    if not enabled or not console.is_terminal or not plan:
        yield lambda spec: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("patients"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    todo = {arm: sum(s.size for s in pending if s.arm == arm) for arm in _arms(plan)}
    with Progress(*columns, console=console) as bar:
        tasks = {
            arm: bar.add_task(
                arm,
                total=trial.patients_per_arm,
                completed=trial.patients_per_arm - todo[arm],
            )
            for arm in todo
        }
        yield lambda spec: bar.advance(tasks[spec.arm], spec.size)


def _arms(plan: Sequence[ChunkSpec]) -> list[str]:
    return list(dict.fromkeys(spec.arm for spec in plan))


# -- collecting and analysing -----------------------------------------------------
def _finish(
    trial,
    outdir: Path,
    plan,
    provenance: dict[str, Any],
    started: float,
    write_report: bool,
) -> TrialResult:
    """Join the chunks, analyse the outcomes, write the outputs."""
    notes: list[str] = []
    outcomes = _collect(outdir / "chunks", plan, trial)
    _write_parquet(outcomes, outdir / "outcomes.parquet")
    default_engine = provenance["engine"] == DEFAULT_ENGINE
    endpoints, validation, population = _analyse(trial, outcomes, notes, default_engine)
    provenance = {
        **provenance,
        "elapsed_s": round(time.monotonic() - started, 3),
        "notes": notes,
    }
    result = TrialResult(
        trial, outcomes, endpoints, validation, population, provenance, outdir
    )
    report = outdir / "report.html"
    report.unlink(missing_ok=True)  # never leave the report of an older run
    if write_report:
        _call_part("report", "write_trial_report", notes, result, report)
    _write_json(outdir / "endpoints.json", result.to_dict())
    return result


def _collect(chunks_dir: Path, plan: Sequence[ChunkSpec], trial) -> pd.DataFrame:
    """All chunks, in arm order (of the trial file) then patient order."""
    if not plan:
        return pd.DataFrame()
    frames = []
    for spec in plan:
        try:
            frames.append(pd.read_parquet(chunks_dir / spec.filename, engine="pyarrow"))
        except (OSError, ValueError) as exc:
            raise TrialRunError(
                f"cannot read chunk {chunks_dir / spec.filename} ({exc}); delete it "
                "and run again to recompute it"
            ) from exc
    outcomes = pd.concat(frames, ignore_index=True)
    order = {arm.name: i for i, arm in enumerate(trial.arms)}
    rank = outcomes["arm"].map(order).to_numpy()
    keep = np.lexsort((outcomes["patient"].to_numpy(), rank))
    return outcomes.take(keep).reset_index(drop=True)


def _analyse(trial, outcomes: pd.DataFrame, notes: list[str], default_engine: bool):
    """Endpoints, validation rows and population summary of the outcomes.

    The population summary describes the calibration done by cartwin's engine
    (:func:`cartwin.trial.simulate.population_summary`); a run with another
    ``simulate`` function has none.
    """
    endpoints = _call_part("endpoints", "compute_endpoints", notes, outcomes, trial)
    population = None
    if default_engine:
        population = _call_part("simulate", "population_summary", notes, trial)
    else:
        notes.append("no population summary: outcomes from a custom simulate function")
    validation = None
    if getattr(trial, "validate_against", None):
        validation = _call_part(
            "validation", "validate", notes, trial, endpoints or {}, None,
            population or {},
        )
    return endpoints or {}, validation or [], population or {}


def _call_part(module: str, function: str, notes: list[str], *args: Any) -> Any:
    """Call ``cartwin.trial.<module>.<function>``; note and skip it while missing.

    The parts of issue 6 are written in parallel; until one lands, the run
    goes on without it and says so in ``provenance["notes"]``.
    """
    name = f"cartwin.trial.{module}"
    try:
        part = getattr(importlib.import_module(name), function, None)
    except ModuleNotFoundError as exc:
        if exc.name != name:
            raise
        part = None
    if part is None:
        notes.append(f"{function} skipped: {name}.{function} is not available yet")
        return None
    return part(*args)


# -- small helpers ----------------------------------------------------------------
def _trial_dict(trial) -> dict[str, Any]:
    return trial.to_dict() if hasattr(trial, "to_dict") else {"name": trial.name}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _json_ready(value: Any) -> Any:
    """Plain JSON values: numpy scalars unwrapped, NaN and infinities as null."""
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_json_ready(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _json_ready(dataclasses.asdict(value))
    return value
