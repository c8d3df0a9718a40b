"""How the command line words an error: one line a user can act on."""

from __future__ import annotations

import errno
import os

from gradient_async._errors import APIConnectionError, APITimeoutError

__all__ = ["describe", "os_reason"]


def os_reason(exc: BaseException) -> str:
    """`exc`'s OS-level reason in words ("No space left on device"), else its own text."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        code = getattr(current, "errno", None)
        if isinstance(code, int) and code in errno.errorcode:
            return os.strerror(code)
        if isinstance(current, BaseExceptionGroup):  # trio: one OSError per address tried
            todo.extend(current.exceptions)
        todo.extend(e for e in (current.__cause__, current.__context__) if e is not None)
    return str(exc) or type(exc).__name__


def describe(exc: BaseException, *, with_class: bool = True) -> str:
    """One line: the error class (unless `with_class=False`) and message; connection failures as
    "cannot connect to SCHEME://HOST:PORT (reason)", never the HTTP library's own wording."""
    prefix = f"{type(exc).__name__}: " if with_class else ""
    if isinstance(exc, APIConnectionError) and not isinstance(exc, APITimeoutError):
        where = "the server"
        if exc.request is not None:
            url = exc.request.url
            where = f"{url.scheme}://{url.host}" + (f":{url.port}" if url.port else "")
        if exc.sent:
            return f"{prefix}the connection to {where} broke ({os_reason(exc).lower()})"
        return f"{prefix}cannot connect to {where} ({os_reason(exc).lower()})"
    return f"{prefix}{exc}"
