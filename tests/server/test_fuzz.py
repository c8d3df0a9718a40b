"""schemathesis against the served OpenAPI schema: generated requests never get a 5xx.

Bounded: a few examples per operation, no shrinking, no example database.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis (extra [dev]) is not installed")
from hypothesis import HealthCheck, Phase, settings  # noqa: E402

from gradient_async.server import ServerSettings, create_app  # noqa: E402

TOKEN = "fuzz-token"
WORKSPACE = "fuzz-workspace"


# The schema is loaded at collection time, so the app lives in a temp dir removed after the module.
_DATA = tempfile.TemporaryDirectory(prefix="gradient-fuzz-")
_APP = create_app(ServerSettings(data_dir=Path(_DATA.name), credentials={TOKEN: {WORKSPACE}}))
schema = schemathesis.openapi.from_asgi("/openapi.json", _APP)


@pytest.fixture(scope="module", autouse=True)
def _cleanup() -> Iterator[None]:
    yield
    _APP.state.gradient.store.close()
    _DATA.cleanup()


@schema.parametrize()
@settings(
    max_examples=8,
    deadline=None,
    database=None,
    derandomize=True,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
def test_no_server_errors(case: Any) -> None:
    for headers in (
        {"Authorization": f"Bearer {TOKEN}", "x-gradient-workspace-id": WORKSPACE},
        {},
    ):
        response = case.call(headers=headers)
        assert response.status_code < 500, (case.method, case.formatted_path, response.text)
        if response.status_code >= 400:
            body = response.json()
            assert isinstance(body.get("message"), str) and body["message"], body
