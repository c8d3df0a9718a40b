"""Run the app under uvicorn with a bounded shutdown.

On SIGTERM or SIGINT the server stops accepting connections, refuses new work (503, `/ready` turns
503), and lets in-flight requests finish for up to `shutdown_timeout` seconds; then it cancels them
and exits. Work still running in a thread after that is abandoned: engines commit a new adapter
version in one rename, so an abandoned fine-tune leaves the previous version. A second signal exits
at once.

Example::

    serve(app, host="127.0.0.1", port=8000, shutdown_timeout=10.0)
"""

from __future__ import annotations

import math
import os
import sys
import threading
from types import FrameType
from typing import Final

import uvicorn
from fastapi import FastAPI

__all__ = ["serve"]

# After the graceful timeout uvicorn cancels the requests; this much more for the lifespan shutdown.
_CLOSE_GRACE_S: Final = 5.0


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, app: FastAPI, shutdown_timeout: float) -> None:
        super().__init__(config)
        self._app = app
        self._shutdown_timeout = shutdown_timeout
        self._signals = 0

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._signals += 1
        if self._signals > 1:
            print("second signal: exiting now (work in flight is abandoned)", file=sys.stderr, flush=True)
            os._exit(128 + sig)
        self._app.state.gradient.admission.close()
        print(
            f"shutting down: finishing requests in flight (up to {self._shutdown_timeout:g} s); "
            "signal again to exit at once",
            file=sys.stderr,
            flush=True,
        )
        timer = threading.Timer(self._shutdown_timeout + _CLOSE_GRACE_S, _give_up, args=(sig,))
        timer.daemon = True
        timer.start()
        super().handle_exit(sig, frame)


def _give_up(sig: int) -> None:
    print("shutdown timeout passed: exiting with work abandoned", file=sys.stderr, flush=True)
    os._exit(128 + sig)


def serve(
    app: FastAPI,
    *,
    host: str,
    port: int,
    log_level: str = "info",
    shutdown_timeout: float = 30.0,
    h11_max_incomplete_event_size: int = 64 * 1024,
    access_log: bool = True,
) -> None:
    """Serve `app` until a signal (see the module docstring). `access_log=False`: no uvicorn access lines
    (`gradient-async serve` logs its own, see server/access_log.py)."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=access_log,
        timeout_graceful_shutdown=math.ceil(shutdown_timeout),
        h11_max_incomplete_event_size=h11_max_incomplete_event_size,
    )
    _Server(config, app, shutdown_timeout).run()
