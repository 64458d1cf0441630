"""Fixtures of the io tests: the key, paths, FHIR and OMOP builders, PostgreSQL.

The project runs pytest with ``--import-mode=importlib``, so helpers reach the
test modules as fixtures, not as imports.
"""

from __future__ import annotations

import csv as _csv
import glob as _glob
import json
import os
import pwd as _pwd
import shutil as _shutil
import socket as _socket
import subprocess as _subprocess
import tempfile as _tempfile
from pathlib import Path

import pytest

#: Pseudonymisation key of the tests (never used for real data).
KEY = b"cartwin-test-key"
#: The project's own FHIR fixtures.
FIXTURES = Path(__file__).resolve().parents[1] / "data" / "fhir"
#: Bundle of one CAR T patient written for these tests.
CART_BUNDLE = FIXTURES / "cart_patient_bundle.json"
UCUM = "http://unitsofmeasure.org"
LOINC = "http://loinc.org"


def shared_dir() -> Path:
    """``/work/shared`` next to the repository, or ``$CARTWIN_SHARED``."""
    env = os.environ.get("CARTWIN_SHARED")
    if env:
        return Path(env)
    return (Path(__file__).resolve().parents[2] / ".." / "shared").resolve()


def real_fhir_dir() -> Path:
    """Folder of the real public FHIR files; skips the test when absent."""
    folder = shared_dir() / "data" / "real" / "fhir"
    if not folder.is_dir():
        pytest.skip(
            f"real FHIR data not found at {folder}: set CARTWIN_SHARED to the "
            "shared folder that holds data/real/fhir"
        )
    return folder


def observation(
    rid: str,
    code: str,
    value=None,
    unit: str | None = None,
    *,
    when: str = "2024-03-06T08:00:00+01:00",
    system: str = LOINC,
    subject: str = "Patient/p1",
    **extra,
) -> dict:
    """A minimal valid Observation (valueQuantity with UCUM code when given)."""
    resource = {
        "resourceType": "Observation",
        "id": rid,
        "status": "final",
        "code": {"coding": [{"system": system, "code": code}]},
        "subject": {"reference": subject},
        "effectiveDateTime": when,
    }
    if value is not None:
        resource["valueQuantity"] = {
            "value": value,
            "unit": unit,
            "system": UCUM,
            "code": unit,
        }
    resource.update(extra)
    return resource


def bundle(*resources: dict) -> dict:
    """A collection Bundle of ``resources`` (no fullUrl)."""
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": r} for r in resources],
    }


def write_json(path: Path, document) -> Path:
    """Write ``document`` as JSON and return ``path``."""
    path.write_text(json.dumps(document, indent=1), encoding="utf-8")
    return path


@pytest.fixture
def key() -> bytes:
    """The test pseudonymisation key."""
    return KEY


@pytest.fixture
def cart_bundle_path() -> Path:
    """Path of the project's one-patient CAR T bundle."""
    return CART_BUNDLE


@pytest.fixture
def real_fhir() -> Path:
    """Folder of the real FHIR files (the test is skipped when absent)."""
    return real_fhir_dir()


@pytest.fixture
def fhir():
    """Builders ``fhir.observation``, ``fhir.bundle`` and ``fhir.write``."""

    class Builders:
        observation = staticmethod(observation)
        bundle = staticmethod(bundle)
        write = staticmethod(write_json)

    return Builders


# -- OMOP CDM fixtures (tests/io/test_omop_*.py) ----------------------------------
# A throwaway PostgreSQL server for the OMOP import tests: initdb into a
# temporary folder, pg_ctl start on a free loopback port with the unix socket
# in that folder, stopped and removed at the end of the session. As root,
# initdb refuses to run, so the server runs as the ``postgres`` user (runuser,
# else su). Without the binaries the tests are skipped, except under CI=true,
# where .ci/run installs PostgreSQL and its absence must fail.


#: Columns of the CDM tables the synthetic OMOP builders write (CDM v5.4 subset).
OMOP_COLUMNS = {
    "person": ("person_id", "gender_concept_id", "year_of_birth", "month_of_birth",
               "day_of_birth", "birth_datetime", "race_concept_id",
               "ethnicity_concept_id", "person_source_value", "gender_source_value"),
    "measurement": ("measurement_id", "person_id", "measurement_concept_id",
                    "measurement_date", "measurement_datetime",
                    "measurement_type_concept_id", "operator_concept_id",
                    "value_as_number", "unit_concept_id", "unit_source_value",
                    "value_source_value", "measurement_source_value"),
    "observation": ("observation_id", "person_id", "observation_concept_id",
                    "observation_date", "observation_datetime",
                    "observation_type_concept_id", "value_as_number",
                    "unit_concept_id", "unit_source_value"),
    "drug_exposure": ("drug_exposure_id", "person_id", "drug_concept_id",
                      "drug_exposure_start_date", "drug_exposure_start_datetime",
                      "drug_exposure_end_date", "drug_exposure_end_datetime",
                      "drug_type_concept_id", "quantity", "dose_unit_source_value"),
    "procedure_occurrence": ("procedure_occurrence_id", "person_id",
                             "procedure_concept_id", "procedure_date",
                             "procedure_datetime", "procedure_end_date",
                             "procedure_end_datetime", "procedure_type_concept_id"),
    "condition_occurrence": ("condition_occurrence_id", "person_id",
                             "condition_concept_id", "condition_start_date",
                             "condition_start_datetime", "condition_end_date",
                             "condition_type_concept_id", "condition_source_value",
                             "condition_source_concept_id"),
    "episode": ("episode_id", "person_id", "episode_concept_id", "episode_start_date",
                "episode_start_datetime", "episode_end_date", "episode_end_datetime",
                "episode_object_concept_id", "episode_type_concept_id"),
    "concept": ("concept_id", "concept_name", "domain_id", "vocabulary_id",
                "concept_class_id", "standard_concept", "concept_code",
                "valid_start_date", "valid_end_date", "invalid_reason"),
    "concept_ancestor": ("ancestor_concept_id", "descendant_concept_id",
                         "min_levels_of_separation", "max_levels_of_separation"),
}


def omop_sample_dir() -> Path:
    """The OHDSI Synthea OMOP sample (CSV folder); skips the test when absent."""
    folder = shared_dir() / "data" / "real" / "omop" / "synthea27nj-cdm54"
    if not (folder / "MEASUREMENT.csv").is_file():
        pytest.skip(
            f"OMOP sample not found at {folder}: set CARTWIN_SHARED to the shared "
            "folder that holds data/real/omop/synthea27nj-cdm54"
        )
    return folder


def write_omop_csv(folder: Path, tables: dict) -> Path:
    """Write ``{table: [row dict, ...]}`` as CDM CSV files (upper-case names).

    Columns are the table's :data:`OMOP_COLUMNS` plus any extra key used;
    ``drop`` (a set of ``table.column``) in ``tables`` leaves columns out.
    """
    folder.mkdir(parents=True, exist_ok=True)
    drop = tables.pop("drop", set())
    for table, rows in tables.items():
        names = list(OMOP_COLUMNS.get(table, ()))
        names += [k for row in rows for k in row if k not in names]
        names = [n for n in names if f"{table}.{n}" not in drop]
        with open(folder / f"{table.upper()}.csv", "w", newline="") as handle:
            writer = _csv.DictWriter(handle, fieldnames=names, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
    return folder


def csv_folder_to_duckdb(folder: Path, path: Path) -> Path:
    """Copy every CSV of an OMOP folder into a DuckDB file (types sniffed)."""
    import duckdb

    con = duckdb.connect(str(path))
    for csv_path in sorted(folder.glob("*.csv")):
        literal = str(csv_path).replace("'", "''")
        con.execute(
            f'CREATE TABLE "{csv_path.stem.lower()}" AS '
            f"SELECT * FROM read_csv('{literal}', header = true)"
        )
    con.close()
    return path


def _require_postgres(reason: str):
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"PostgreSQL is required under CI=true: {reason}")
    pytest.skip(reason)


def _postgres_bindir() -> Path | None:
    found = sorted(
        _glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if found:
        return Path(found[-1]).parent
    initdb = _shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def _run_as_postgres_user(cmd: list[str]) -> list[str]:
    """``cmd`` run as the ``postgres`` user when we are root (initdb refuses root)."""
    if os.geteuid() != 0:
        return cmd
    try:
        _pwd.getpwnam("postgres")
    except KeyError:
        _require_postgres("running as root, and no 'postgres' user to run initdb as")
    if _shutil.which("runuser"):
        return ["runuser", "-u", "postgres", "--", *cmd]
    return ["su", "postgres", "-s", "/bin/sh", "-c", " ".join(map(_shell_quote, cmd))]


def _shell_quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


def _free_port() -> int:
    with _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PostgresServer:
    """A running throwaway server: ``url``, ``connect()``, ``load_csv_folder()``."""

    def __init__(self, bindir: Path, root: Path) -> None:
        self.bindir, self.root = bindir, root
        self.data, self.port = root / "data", _free_port()
        self.url = f"postgresql://cartwin@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        command = _run_as_postgres_user([str(a) for a in args])
        done = _subprocess.run(
            command, check=False, capture_output=True, text=True, timeout=120
        )
        if done.returncode != 0:
            log = self.root / "server.log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(
                f"{args[0]} failed: {done.stderr}\n{done.stdout}\n{tail}"
            )

    def start(self) -> PostgresServer:
        self._run(
            self.bindir / "initdb", "-D", self.data, "-U", "cartwin", "-A", "trust",
            "-E", "UTF8", "--locale=C", "--no-sync",
        )  # fmt: skip
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self._run(
            self.bindir / "pg_ctl", "-D", self.data, "-o", options,
            "-l", self.root / "server.log", "-w", "-t", "60", "start",
        )  # fmt: skip
        return self

    def stop(self) -> None:
        self._run(
            self.bindir / "pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop"
        )

    def connect(self):
        import psycopg

        return psycopg.connect(self.url, autocommit=True)

    def load_csv_folder(self, folder: Path, schema: str) -> None:
        """Create ``schema`` and load each CSV of ``folder`` into a typed table."""
        import duckdb

        with self.connect() as con:
            con.execute(f'CREATE SCHEMA "{schema}"')
            for csv_path in sorted(folder.glob("*.csv")):
                literal = str(csv_path).replace("'", "''")
                described = duckdb.sql(
                    f"DESCRIBE SELECT * FROM read_csv('{literal}', header = true)"
                ).fetchall()
                table = f'"{schema}"."{csv_path.stem.lower()}"'
                columns = ", ".join(f'"{name}" {_PG_TYPE.get(kind, "text")}'
                                    for name, kind, *_ in described)
                con.execute(f"CREATE TABLE {table} ({columns})")
                with con.cursor().copy(
                    f"COPY {table} FROM STDIN (FORMAT csv, HEADER true)"
                ) as copy:
                    copy.write(csv_path.read_bytes())


_PG_TYPE = {"BIGINT": "bigint", "INTEGER": "integer", "DOUBLE": "double precision",
            "DATE": "date", "TIMESTAMP": "timestamp", "VARCHAR": "text",
            "BOOLEAN": "boolean"}


@pytest.fixture(scope="session")
def postgres():
    """A throwaway PostgreSQL server for the session (see the notes above)."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _require_postgres("psycopg 3 is not installed (pip install 'psycopg[binary]')")
    bindir = _postgres_bindir()
    if bindir is None:
        _require_postgres(
            "PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin or "
            "initdb on PATH); install the Debian package postgresql"
        )
    root = Path(_tempfile.mkdtemp(prefix="cartwin-pg-"))
    if os.geteuid() == 0:
        os.chown(root, _pwd.getpwnam("postgres").pw_uid, -1)
    server = PostgresServer(bindir, root)
    try:
        server.start()
        yield server
    finally:
        try:
            if (server.data / "postmaster.pid").exists():
                server.stop()
        finally:
            _shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def omop_sample() -> Path:
    """The OHDSI Synthea OMOP sample folder (the test is skipped when absent)."""
    return omop_sample_dir()


@pytest.fixture
def omop():
    """OMOP builders: ``write_csv(folder, tables)``, ``to_duckdb(folder, path)``."""

    class Builders:
        write_csv = staticmethod(write_omop_csv)
        to_duckdb = staticmethod(csv_folder_to_duckdb)
        columns = OMOP_COLUMNS

    return Builders
