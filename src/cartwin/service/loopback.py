"""Run the service on a free loopback port in a background thread.

For tests and benchmarks that need a real server (streams, WebSockets) while
sending traffic only to ``127.0.0.1``. The socket is bound before uvicorn
starts, so the port is known and no other process can take it meanwhile.
"""

from __future__ import annotations

import socket
import threading
import time

import uvicorn

from cartwin.errors import CartwinError


class LoopbackServer:
    """uvicorn serving ``app`` on ``127.0.0.1:<free port>``; a context manager.

    Parameters
    ----------
    app : ASGI application
        Usually from :func:`cartwin.service.app.create_app`.
    start_timeout : float
        Seconds to wait for the server to accept connections.

    Examples
    --------
    >>> with LoopbackServer(app) as server:  # doctest: +SKIP
    ...     httpx.get(server.url + "/v1/health")
    """

    def __init__(self, app, *, start_timeout: float = 20.0) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app, log_level="warning", access_log=False, lifespan="on",
            timeout_graceful_shutdown=2,
        )  # fmt: skip
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )
        self._start_timeout = start_timeout

    def __enter__(self) -> LoopbackServer:
        self._thread.start()
        deadline = time.monotonic() + self._start_timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise CartwinError(f"service did not start on {self.url}")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()
