"""A worker that stops dead inside its first twin version save (kill tests).

Usage: ``python scheduler_crash_worker.py STORE``

Runs due jobs with :func:`cartwin.scheduler.run_pending`, but the store's
``save_twin_version`` is wrapped: once the version row is written inside the
job's completion transaction, before the commit, the script prints
``SAVED-UNCOMMITTED <version_id>`` and sleeps, for the test to SIGKILL it.
"""

from __future__ import annotations

import sys
import time

from cartwin.scheduler import SchedulerConfig, run_pending
from cartwin.store import open_store


def main(store_url: str) -> None:
    with open_store(store_url) as store:
        cls = type(store)
        save = cls.save_twin_version

        def save_then_hang(self, version):
            version_id = save(self, version)
            print(f"SAVED-UNCOMMITTED {version_id}", flush=True)
            time.sleep(600)
            return version_id

        cls.save_twin_version = save_then_hang
        run_pending(store, worker="doomed", config=SchedulerConfig(lease_s=2.0))


if __name__ == "__main__":
    main(sys.argv[1])
