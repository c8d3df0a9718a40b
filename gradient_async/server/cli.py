"""`gradient-async serve`: run the Gradient-compatible server with uvicorn (loopback by default).

Example::

    gradient-async serve --port 8000 --token my-token --workspace my-workspace
    GRADIENT_API_URL=http://127.0.0.1:8000/api GRADIENT_ACCESS_TOKEN=my-token \\
        GRADIENT_WORKSPACE_ID=my-workspace gradient-async models --only-base
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gradient_async.server.faults import FaultSettings
from gradient_async.server.limits import DEFAULT_LIMITS, ServerLimits
from gradient_async.server.settings import (
    ServerSettings,
    default_data_dir,
    generate_token,
    load_credentials,
    resolve_engine,
)

__all__ = ["add_arguments", "build_limits", "build_settings", "run"]

DEFAULT_WORKSPACE = "local-workspace"

# One flag per ServerLimits field: --max-body-bytes, --max-queue, --requests-per-minute, ...
_LIMIT_HELP = {
    "max_body_bytes": "request body bytes (413)",
    "max_header_bytes": "request header bytes, all headers together (431)",
    "max_workspace_chars": "length of the x-gradient-workspace-id header (400)",
    "max_adapter_name_chars": "adapter name length (400)",
    "max_query_tokens": "tokens in a completion's query (422)",
    "context_tokens": "prompt + generated tokens, for engines that declare no context window (422)",
    "max_fine_tune_samples": "samples in one fine-tune request (413)",
    "max_fine_tune_tokens": "tokens in one fine-tune request (422)",
    "max_queue": "engine calls running or waiting at once; more get 429 + Retry-After",
    "requests_per_minute": "requests per minute per access token (429 + Retry-After); default: no limit",
    "tokens_per_minute": "tokens per minute per access token (429 + Retry-After); default: no limit",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `serve` options."""
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, loopback only)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument(
        "--engine",
        choices=("auto", "test", "local"),
        default="auto",
        help="text engine: local (real small model), test (deterministic) or auto (local if installed; default)",
    )
    parser.add_argument("--data-dir", type=Path, default=None, help="where models and adapters are kept")
    parser.add_argument("--config", type=Path, default=None, help='JSON file: {"credentials": [{token, workspaces}]}')
    parser.add_argument("--token", default=None, help="access token to accept (default: generated and printed)")
    parser.add_argument("--workspace", default=None, help=f"workspace for --token (default {DEFAULT_WORKSPACE})")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="add this latency to every API answer")
    parser.add_argument("--fail-rate", type=float, default=0.0, help="answer this fraction of requests with 503")
    parser.add_argument("--rate-limit-rps", type=float, default=None, help="answer 429 + Retry-After above this rate")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fault injection RNG")
    parser.add_argument("--log-level", default="info", help="uvicorn log level (default info)")
    limits = parser.add_argument_group("limits (checked before any work; see the README)")
    for name, help_text in _LIMIT_HELP.items():
        default = getattr(DEFAULT_LIMITS, name)
        kind = float if name.endswith("_per_minute") else int
        shown = "" if default is None else f" (default {default})"
        limits.add_argument(
            f"--{name.replace('_', '-')}", dest=f"limit_{name}", type=kind, default=default, help=help_text + shown
        )


def build_limits(args: argparse.Namespace) -> ServerLimits:
    """The `ServerLimits` the limit flags describe (ValueError names a bad value)."""
    return ServerLimits(**{name: getattr(args, f"limit_{name}", getattr(DEFAULT_LIMITS, name)) for name in _LIMIT_HELP})


def build_settings(args: argparse.Namespace) -> tuple[ServerSettings, str | None]:
    """Settings from the parsed options, plus the generated token (None when the user gave one)."""
    credentials: dict[str, set[str]] = load_credentials(args.config) if args.config else {}
    generated: str | None = None
    if args.token or not credentials:
        token = args.token
        if not token:
            token = generated = generate_token()
        credentials.setdefault(token, set()).add(args.workspace or DEFAULT_WORKSPACE)
    elif args.workspace:
        raise ValueError("--workspace needs --token (or list workspaces in the --config file)")
    faults = FaultSettings(
        latency_ms=args.latency_ms, fail_rate=args.fail_rate, rate_limit_rps=args.rate_limit_rps, seed=args.seed
    )
    settings = ServerSettings(
        data_dir=args.data_dir or default_data_dir(),
        credentials=credentials,
        engine=resolve_engine(args.engine),
        faults=faults,
        limits=build_limits(args),
    )
    return settings, generated


def run(args: argparse.Namespace) -> int:
    """Start the server and block until SIGINT/SIGTERM (uvicorn shuts down gracefully)."""
    try:
        import uvicorn

        from gradient_async.server.app import create_app
    except ImportError as exc:
        print(
            f"error: the server needs the [server] extra: pip install 'gradient-async[server]' ({exc})", file=sys.stderr
        )
        return 2
    try:
        settings, generated = build_settings(args)
        app = create_app(settings)
    except (ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    url = f"http://{args.host}:{args.port}/api"
    print(f"Gradient-compatible server: {url}  (engine: {settings.engine}, data: {settings.data_dir})")
    for token, workspaces in settings.credentials.items():
        # Only a token this process generated is printed; one you chose stays off the screen.
        shown = token if token == generated else "<your token>"
        for workspace in sorted(workspaces):
            print(f"  GRADIENT_API_URL={url} GRADIENT_ACCESS_TOKEN={shown} GRADIENT_WORKSPACE_ID={workspace}")
    sys.stdout.flush()
    # h11 refuses headers past this size itself (400); below it our 431 with a message applies.
    h11_limit = max(64 * 1024, 4 * settings.limits.max_header_bytes)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, h11_max_incomplete_event_size=h11_limit)
    return 0
