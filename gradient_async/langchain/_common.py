"""Settings shared by `GradientLLM` and `GradientEmbeddings`: credentials from arguments or the
environment (the SDK's three variables), or an existing `AsyncGradient` passed as `client=`.

Example::

    values = fill_from_env({"gradient_workspace_id": "ws"})   # token from GRADIENT_ACCESS_TOKEN
    runtime = make_runtime("GradientLLM", client=None, access_token=..., workspace_id="ws", api_url=...)
"""

from __future__ import annotations

import os
from typing import Any, Protocol

from pydantic import SecretStr

from gradient_async._client import AsyncGradient
from gradient_async._config import DEFAULT_BASE_URL, ClientConfig, Secret
from gradient_async.langchain._runtime import ClientRuntime, ClientSettings

__all__ = ["CREDENTIAL_FIELDS", "RuntimeSettings", "attach_runtime", "fill_from_env", "make_runtime"]

CREDENTIAL_FIELDS = {
    "gradient_access_token": "GRADIENT_ACCESS_TOKEN",
    "gradient_workspace_id": "GRADIENT_WORKSPACE_ID",
    "gradient_api_url": "GRADIENT_API_URL",
}


def fill_from_env(values: Any) -> Any:
    """Fill unset credential fields from the environment (empty strings count as unset).

    With `client=` the credentials come from that client, so passing them too is refused.
    """
    if not isinstance(values, dict):
        return values
    if values.get("client") is not None:
        given = [name for name in CREDENTIAL_FIELDS if values.get(name)]
        if given:
            raise ValueError(
                f"pass either client=AsyncGradient(...) or {', '.join(given)}, not both "
                "(the client already carries its token, workspace and URL)"
            )
        return values
    out = dict(values)
    for name, env in CREDENTIAL_FIELDS.items():
        if not out.get(name):
            value = os.environ.get(env)
            if value:
                out[name] = value
            elif name != "gradient_api_url":
                out.pop(name, None)
    if not out.get("gradient_api_url"):
        out["gradient_api_url"] = DEFAULT_BASE_URL
    return out


def make_runtime(
    owner: str,
    *,
    client: AsyncGradient | None,
    access_token: SecretStr | None,
    workspace_id: str | None,
    api_url: str,
    max_retries: int,
    max_concurrency: int | None,
    timeout: float | None,
    explicit: frozenset[str] | set[str] = frozenset(),
) -> ClientRuntime:
    """The runtime for a LangChain object; ValueError naming every missing or bad setting.

    With a shared `client`, the `explicit`ly set `max_retries` / `timeout` apply through
    `client.with_options(...)` (same pool and limiter, other defaults).
    """
    if client is not None:
        if not isinstance(client, AsyncGradient):
            raise ValueError(f"client must be a gradient_async.AsyncGradient, got {type(client).__name__}")
        if "max_retries" in explicit:
            client = client.with_options(max_retries=max_retries)
        if "timeout" in explicit:
            client = client.with_options(timeout=timeout)
        return ClientRuntime(None, shared=client)
    token = access_token.get_secret_value() if access_token is not None else ""
    missing = []
    if not token:
        missing.append("gradient_access_token (pass gradient_access_token=... or set GRADIENT_ACCESS_TOKEN)")
    if not workspace_id:
        missing.append("gradient_workspace_id (pass gradient_workspace_id=... or set GRADIENT_WORKSPACE_ID)")
    if missing:
        raise ValueError(f"{owner} is missing " + " and ".join(missing) + ", or pass client=AsyncGradient(...)")
    assert workspace_id is not None
    # Checks the URL and the limits the same way the client will (no I/O).
    config = ClientConfig(access_token=Secret(token), workspace_id=workspace_id, base_url=api_url)
    settings = ClientSettings(
        access_token=token,
        workspace_id=workspace_id,
        base_url=config.base_url,
        max_retries=max_retries,
        max_concurrency=max_concurrency,
        timeout=timeout,
    )
    return ClientRuntime(settings)


class RuntimeSettings(Protocol):
    """The fields `GradientLLM` and `GradientEmbeddings` share with LangChain's classes."""

    client: AsyncGradient | None
    gradient_access_token: SecretStr | None
    gradient_workspace_id: str | None
    gradient_api_url: str
    max_retries: int
    max_concurrency: int | None
    timeout: float | None

    @property
    def model_fields_set(self) -> set[str]: ...


def attach_runtime(owner: RuntimeSettings) -> ClientRuntime:
    """`make_runtime` for a LangChain object's own fields; with a shared client, its workspace
    and URL are copied back so the object describes the client it really uses."""
    runtime = make_runtime(
        type(owner).__name__,
        client=owner.client,
        access_token=owner.gradient_access_token,
        workspace_id=owner.gradient_workspace_id,
        api_url=owner.gradient_api_url,
        max_retries=owner.max_retries,
        max_concurrency=owner.max_concurrency,
        timeout=owner.timeout,
        explicit=owner.model_fields_set,
    )
    if owner.client is not None:
        owner.gradient_workspace_id = owner.client.workspace_id
        owner.gradient_api_url = owner.client.base_url
    return runtime
