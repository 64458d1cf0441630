"""Request body size limit, per-token rate limit and (closed) CORS.

* :class:`BodySizeLimitMiddleware` answers 413 before reading a body whose
  ``Content-Length`` is over the limit, and stops a chunked body as soon as
  it passes the limit (the handler then sees a disconnect and the client a
  413).
* :class:`RateLimiter` is a token bucket per API token: ``burst`` requests at
  once, refilled at ``rate`` per second. It lives in the process's memory,
  so limits are per service process and start afresh after a restart.
* :func:`install_cors` adds Starlette's CORS middleware with the configured
  origins only. With none (the default) every cross-origin preflight is
  refused (400, no ``Access-Control-Allow-Origin``) and no response carries
  CORS headers, so browsers on other origins cannot read the API.
"""

from __future__ import annotations

import json
import math
import threading
import time

from starlette.middleware.cors import CORSMiddleware


class BodyTooLarge(Exception):
    """A streamed request body passed the configured limit."""


class BodySizeLimitMiddleware:
    """ASGI middleware refusing request bodies over ``max_bytes`` with 413."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(send, declared)
            return
        state = {"seen": 0, "overflow": False, "refused": False}

        async def counted_receive() -> dict:
            message = await receive()
            if message["type"] == "http.request":
                state["seen"] += len(message.get("body", b""))
                if state["seen"] > self.max_bytes:
                    state["overflow"] = True
                    raise BodyTooLarge()
            return message

        async def guarded_send(message: dict) -> None:
            # Once over the limit, whatever the app answers becomes a 413.
            if not state["overflow"]:
                await send(message)
            elif message["type"] == "http.response.start" and not state["refused"]:
                state["refused"] = True
                await self._refuse(send, state["seen"])

        try:
            await self.app(scope, counted_receive, guarded_send)
        except BodyTooLarge:
            pass
        if state["overflow"] and not state["refused"]:
            await self._refuse(send, state["seen"])

    async def _refuse(self, send, size: int) -> None:
        body = json.dumps(
            {
                "error": {
                    "status": 413,
                    "code": "body-too-large",
                    "message": f"request body of {size} bytes or more is over the "
                    f"limit of {self.max_bytes} bytes (max_body_bytes)",
                    "field": "body",
                    "value": str(size),
                }
            }
        ).encode("utf-8")
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _content_length(scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class RateLimiter:
    """Token bucket per key (API token id): ``burst`` at once, ``rate`` per second.

    Examples
    --------
    >>> limiter = RateLimiter(rate=1.0, burst=2, clock=lambda: 0.0)
    >>> [limiter.acquire("t") for _ in range(3)]
    [0.0, 0.0, 1.0]
    """

    def __init__(self, rate: float, burst: int, clock=time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"rate {rate} must be > 0 and burst {burst} >= 1")
        self.rate = float(rate)
        self.burst = int(burst)
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}

    def acquire(self, key: str, cost: float = 1.0) -> float:
        """Take ``cost`` from ``key``'s bucket.

        Returns
        -------
        float
            0.0 when allowed; otherwise the seconds to wait before retrying
            (nothing is taken).
        """
        now = self._clock()
        with self._lock:
            level, last = self._buckets.get(key, (float(self.burst), now))
            level = min(float(self.burst), level + (now - last) * self.rate)
            if level >= cost:
                self._buckets[key] = (level - cost, now)
                return 0.0
            self._buckets[key] = (level, now)
            return (cost - level) / self.rate


def retry_after_header(wait_seconds: float) -> str:
    """``Retry-After`` value (whole seconds, at least 1)."""
    return str(max(1, math.ceil(wait_seconds)))


def install_cors(app, origins: tuple[str, ...]) -> None:
    """Allow cross-origin reads and writes from ``origins`` only (none by default)."""
    app.add_middleware(
        CORSMiddleware,
        allow_origins=list(origins),
        allow_methods=["GET", "POST"],
        allow_headers=["Authorization", "Content-Type"],
        allow_credentials=False,
    )
