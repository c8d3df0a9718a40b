"""Project-wide test setup.

pytest-asyncio runs in auto mode, which claims every coroutine test for asyncio, including the
ones parametrized over anyio's `anyio_backend`. The hook below runs the trio variants on trio for
real, so a test marked `@pytest.mark.anyio` with an `anyio_backend` fixture covers both libraries.
"""

from __future__ import annotations

import functools
import inspect

import pytest

pytest_plugins = ["pytester"]  # tests/kit runs pytest inside pytest (allowed only in this top-level conftest)


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    if pyfuncitem.funcargs.get("anyio_backend") != "trio":
        return None
    func = inspect.unwrap(pyfuncitem.obj)
    if not inspect.iscoroutinefunction(func):
        return None
    import trio

    kwargs = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    trio.run(functools.partial(func, **kwargs))
    return True
