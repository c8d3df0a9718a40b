"""Server settings: where data lives, which engine runs, who may call, and the fault knobs.

Credentials map bearer tokens to the workspaces they may use. They come from flags
(`--token`/`--workspace`), a JSON config file, or are generated at start-up.

Config file format::

    {"credentials": [{"token": "tok-a", "workspaces": ["ws-a"]},
                     {"token": "tok-b", "workspaces": ["ws-b", "ws-shared"]}]}

Example::

    settings = ServerSettings(data_dir=Path("/tmp/gradient"), credentials={"tok": {"ws"}})
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from gradient_async.engine.models import ModelSource
from gradient_async.engine.registry import ENGINES, EngineOptions, engine_choices
from gradient_async.server.faults import FaultSettings
from gradient_async.server.limits import ServerLimits

__all__ = [
    "ServerSettings",
    "default_data_dir",
    "generate_token",
    "load_credentials",
]


def default_data_dir() -> Path:
    """The per-user cache dir for the server's data (needs platformdirs, part of the `server` extra)."""
    import platformdirs

    return Path(platformdirs.user_cache_dir("gradient-async")) / "server"


def generate_token() -> str:
    """A fresh random access token for a local server."""
    return "gsk-local-" + secrets.token_urlsafe(24)


def load_credentials(path: str | Path) -> dict[str, set[str]]:
    """Read a credentials file (see the module docstring); ValueError names what is wrong.

    Example::

        creds = load_credentials("gradient-server.json")
    """
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"config file {p} does not exist") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"config file {p} is not valid JSON: {exc}") from None
    entries = data.get("credentials") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ValueError(f'config file {p} needs a non-empty "credentials" list of {{"token", "workspaces"}}')
    creds: dict[str, set[str]] = {}
    for i, entry in enumerate(entries):
        token = entry.get("token") if isinstance(entry, dict) else None
        workspaces = entry.get("workspaces") if isinstance(entry, dict) else None
        if not isinstance(token, str) or not token:
            raise ValueError(f"config file {p}: credentials[{i}].token must be a non-empty string")
        if not isinstance(workspaces, list) or not all(isinstance(w, str) and w for w in workspaces) or not workspaces:
            raise ValueError(f"config file {p}: credentials[{i}].workspaces must be a non-empty list of strings")
        creds.setdefault(token, set()).update(workspaces)
    return creds


@dataclass
class ServerSettings:
    """Everything `create_app` needs.

    Args:
        data_dir: SQLite catalogue and engine files live here.
        credentials: token -> workspaces it may use.
        engine: a name in `gradient_async.engine.registry.ENGINES` ("test": deterministic,
            no ML deps; "local": the real small model; ...). Resolve "auto" before.
        faults: the fault knobs (mutable at run time).
        limits: size, work and rate limits (see `ServerLimits`; replace the object to change them).
        batch_max_size / batch_wait_ms: dynamic batching of completions (engines that batch in-process).
        models: `--model` sources (empty: the engine's default base model).
        vllm_url / vllm_python / vllm_args: for the vllm engine (see `EngineOptions`).

    Example::

        ServerSettings(data_dir=tmp, credentials={"t": {"w"}}, faults=FaultSettings(latency_ms=5))
    """

    data_dir: Path
    credentials: dict[str, set[str]] = field(default_factory=dict)
    engine: str = "test"
    faults: FaultSettings = field(default_factory=FaultSettings)
    limits: ServerLimits = field(default_factory=ServerLimits)
    batch_max_size: int = 32
    batch_wait_ms: float = 2.0
    models: tuple[ModelSource, ...] = ()
    vllm_url: str | None = None
    vllm_python: Path | None = None
    vllm_args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir)
        if self.engine not in ENGINES:
            choices = ", ".join(c for c in engine_choices() if c != "auto")
            raise ValueError(f"engine must be one of {choices} (resolve 'auto' first), got {self.engine!r}")
        if self.batch_max_size < 1:
            raise ValueError(f"batch_max_size must be >= 1, got {self.batch_max_size}")
        if self.batch_wait_ms < 0:
            raise ValueError(f"batch_wait_ms must be >= 0, got {self.batch_wait_ms}")

    def engine_options(self) -> EngineOptions:
        """What the engine factory gets: its files live under `data_dir/engine`."""
        return EngineOptions(
            data_dir=self.data_dir / "engine",
            models=tuple(self.models),
            batch_max_size=self.batch_max_size,
            batch_wait_ms=self.batch_wait_ms,
            vllm_url=self.vllm_url,
            vllm_python=self.vllm_python,
            vllm_args=tuple(self.vllm_args),
        )

    def grant(self, token: str, workspace: str) -> None:
        """Let `token` use `workspace` (takes effect on the next request)."""
        if not token or not workspace:
            raise ValueError("token and workspace must be non-empty")
        self.credentials.setdefault(token, set()).add(workspace)
