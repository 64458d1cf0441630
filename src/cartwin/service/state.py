"""Everything one service process holds: store, key, tokens, audit, stream.

:class:`ServiceState` is made by :func:`cartwin.service.app.create_app` and
kept in ``app.state.service``. It opens the store (checking the
pseudonymisation key against the store's fingerprint) and the service
database when made, starts the live writer with the app's event loop, and
releases everything in :meth:`ServiceState.close`.
"""

from __future__ import annotations

import logging

from cartwin.record.pseudonym import key_fingerprint
from cartwin.service.audit import AuditLog
from cartwin.service.auth import TokenRegistry
from cartwin.service.crs_live import LiveCrs
from cartwin.service.db import ServiceDB
from cartwin.service.limits import RateLimiter
from cartwin.service.settings import ServiceSettings
from cartwin.service.stream import (
    AlertBroker,
    AlertStore,
    StoreGate,
    VitalsIngestor,
)

logger = logging.getLogger(__name__)


class ServiceState:
    """Resources of one service process.

    Parameters
    ----------
    settings : ServiceSettings
        The service's settings.

    Raises
    ------
    KeyMissingError
        When no pseudonymisation key is configured.
    StoreError
        When the store or the service database cannot be opened, or the key
        is not the one the store was made with.
    """

    def __init__(self, settings: ServiceSettings) -> None:
        from cartwin.store import open_store

        self.settings = settings
        self.key = settings.key_bytes()
        self.db = ServiceDB(settings.security_db_path())
        try:
            store = open_store(settings.store)
        except BaseException:
            self.db.close()
            raise
        self.gate = StoreGate(store, LiveCrs(settings.live_cache_patients))
        try:
            with self.gate.use() as opened:
                opened.check_key(key_fingerprint(self.key))
        except BaseException:
            self.close()
            raise
        self.tokens = TokenRegistry(self.db)
        self.audit = AuditLog(self.db)
        self.alerts = AlertStore(self.db)
        self.broker = AlertBroker(settings.subscriber_queue_max)
        self.limiter = RateLimiter(
            settings.rate_limit_per_second, settings.rate_limit_burst
        )
        self.ingestor = VitalsIngestor(
            self.gate, self.alerts, self.broker, settings.ingest_batch_max
        )
        self._closed = False

    async def start(self) -> None:
        """Start the live writer in the running event loop."""
        await self.ingestor.start()

    async def stop(self) -> None:
        """Store what is queued and end every alert stream."""
        await self.ingestor.stop()
        self.broker.close()

    def close(self) -> None:
        """Release the writer thread, the store and the service database."""
        if getattr(self, "_closed", False):
            return
        self._closed = True
        if hasattr(self, "ingestor"):
            self.ingestor.close()
        with self.gate.use() as store:
            store.close()
        self.db.close()
