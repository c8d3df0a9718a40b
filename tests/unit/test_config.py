from __future__ import annotations

import httpx
import pytest

from gradient_async import AsyncGradient, ClientConfig, InputValidationError, MissingCredentialsError
from gradient_async._config import DEFAULT_BASE_URL, to_httpx_timeout


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("GRADIENT_ACCESS_TOKEN", "GRADIENT_WORKSPACE_ID", "GRADIENT_API_URL"):
        monkeypatch.delenv(name, raising=False)


def test_missing_credentials_name_every_env_var() -> None:
    with pytest.raises(MissingCredentialsError) as info:
        AsyncGradient()
    assert "GRADIENT_ACCESS_TOKEN" in str(info.value)
    assert "GRADIENT_WORKSPACE_ID" in str(info.value)


def test_missing_workspace_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRADIENT_ACCESS_TOKEN", "tok")
    with pytest.raises(MissingCredentialsError) as info:
        AsyncGradient()
    assert "GRADIENT_WORKSPACE_ID" in str(info.value)
    assert "GRADIENT_ACCESS_TOKEN" not in str(info.value)


def test_env_fallback_and_empty_url_counts_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRADIENT_ACCESS_TOKEN", "tok")
    monkeypatch.setenv("GRADIENT_WORKSPACE_ID", "ws")
    monkeypatch.setenv("GRADIENT_API_URL", "")
    client = AsyncGradient()
    assert client.workspace_id == "ws"
    assert client.base_url == DEFAULT_BASE_URL
    assert client.config.access_token.reveal() == "tok"


def test_explicit_arguments_beat_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRADIENT_ACCESS_TOKEN", "env-tok")
    monkeypatch.setenv("GRADIENT_WORKSPACE_ID", "env-ws")
    monkeypatch.setenv("GRADIENT_API_URL", "http://env.example/api")
    client = AsyncGradient(access_token="arg-tok", workspace_id="arg-ws", base_url="http://arg.example/api/")
    assert client.workspace_id == "arg-ws"
    assert client.base_url == "http://arg.example/api"  # trailing slash stripped: no '//models'
    assert client.config.access_token.reveal() == "arg-tok"


@pytest.mark.parametrize("bad", [0, -1, "10", True])
def test_bad_timeout_is_rejected(bad: object) -> None:
    with pytest.raises(InputValidationError, match="timeout"):
        to_httpx_timeout(bad)  # type: ignore[arg-type]


def test_timeout_forms() -> None:
    assert to_httpx_timeout(5).read == 5.0
    assert to_httpx_timeout(None).read is None
    custom = httpx.Timeout(3.0, connect=1.0)
    assert to_httpx_timeout(custom) is custom


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_concurrency": 0}, "max_concurrency"),
        ({"base_url": "ftp://x"}, "http:// or https://"),
        ({"base_url": "http://x/api\n"}, r"base_url \(or GRADIENT_API_URL\) is not a valid URL"),
        ({"base_url": "http:///api"}, "names no host"),
    ],
)
def test_bad_settings_rejected(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(InputValidationError, match=match):
        AsyncGradient(access_token="t", workspace_id="w", **kwargs)  # type: ignore[arg-type]


def test_config_is_immutable_and_redacted() -> None:
    config = ClientConfig.from_env(access_token="very-secret", workspace_id="w")
    assert "very-secret" not in repr(config)
    with pytest.raises(AttributeError):
        config.workspace_id = "other"  # type: ignore[misc]
