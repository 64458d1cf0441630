"""A burst of imports, each acknowledged on stdout once durable (kill tests).

Usage: ``python scheduler_import_burst.py STORE N``

Opens the store, prints ``READY``, then makes N one-patient files
(:func:`burst_record`) and imports them one by one, printing ``IMPORTING <i>``
when an import starts and, after the import and its
:func:`~cartwin.scheduler.enqueue_for_observations`,
``ACK <i> <sha256> <pseudonym> <n_observations>``: the sender's
acknowledgement, given only for data that is committed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import sys

from cartwin.record.model import Observation, PatientFacts, PatientRecord
from cartwin.scheduler import enqueue_for_observations
from cartwin.store import open_store

#: Observations per file: enough that a kill lands inside an import.
N_OBSERVATIONS = 50_000
_START = dt.datetime(2025, 3, 10, 9, 0, tzinfo=dt.UTC)


def burst_record(index: int) -> tuple[PatientRecord, str]:
    """File ``index``: one patient's SpO2 series, and the file's SHA-256."""
    observations = tuple(
        Observation("spo2", _START + dt.timedelta(seconds=30 * k), 90.0 + k % 9, "%",
                    source_id=f"Observation/{index}-{k}")
        for k in range(N_OBSERVATIONS)
    )  # fmt: skip
    record = PatientRecord(PatientFacts(f"{index + 1:016x}"), observations)
    return record, hashlib.sha256(f"burst-{index}".encode()).hexdigest()


def main(store_url: str, n_files: int) -> None:
    with open_store(store_url) as store:
        print("READY", flush=True)
        for index in range(n_files):
            record, sha = burst_record(index)
            print(f"IMPORTING {index}", flush=True)
            summary = store.import_records(
                [record], source_name=f"burst-{index}.json", source_sha256=sha
            )
            pseudonym = record.facts.pseudonym
            enqueue_for_observations(store, pseudonym, ["spo2"])
            print(f"ACK {index} {sha} {pseudonym} {summary.n_observations}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
