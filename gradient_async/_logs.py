"""`GRADIENT_LOG=debug|info` turns on the library's logging without code (as `OPENAI_LOG` does).

Log lines go to stderr through one handler on the `gradient_async` logger; they name methods,
URLs, statuses and waits, never the access token.

Example::

    GRADIENT_LOG=debug python my_app.py
"""

from __future__ import annotations

import logging
import os
from typing import Final

__all__ = ["setup_logging"]

_LEVELS: Final = {"debug": logging.DEBUG, "info": logging.INFO}
_HANDLER_NAME: Final = "gradient_async.GRADIENT_LOG"


def setup_logging() -> None:
    """Apply GRADIENT_LOG once: set the `gradient_async` logger's level and add a stderr handler.
    Unknown values are ignored; nothing happens without the variable."""
    level = _LEVELS.get(os.environ.get("GRADIENT_LOG", "").strip().lower())
    if level is None:
        return
    logger = logging.getLogger("gradient_async")
    logger.setLevel(level)
    if not any(h.get_name() == _HANDLER_NAME for h in logger.handlers):
        handler = logging.StreamHandler()
        handler.set_name(_HANDLER_NAME)
        handler.setFormatter(logging.Formatter("[%(asctime)s - %(name)s:%(lineno)d - %(levelname)s] %(message)s"))
        logger.addHandler(handler)
