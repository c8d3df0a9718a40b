"""`gradient-async serve`: run the Gradient-compatible server with uvicorn (loopback by default).

Safe defaults: the access token comes from `GRADIENT_SERVER_TOKEN`, `--token-file` or `--config`
(`--token` works too, but shows in `ps`); with none, a token is generated and printed, on loopback
only: binding beyond loopback (`--host 0.0.0.0`) without an explicit token refuses to start and says
why. A server that cannot start prints one line and exits with status 2.

Example::

    GRADIENT_SERVER_TOKEN=my-token gradient-async serve --port 8000 --workspace my-workspace
    GRADIENT_API_URL=http://127.0.0.1:8000/api GRADIENT_ACCESS_TOKEN=my-token \\
        GRADIENT_WORKSPACE_ID=my-workspace gradient-async models --only-base
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sqlite3
import sys
from pathlib import Path

from gradient_async.engine.models import check_unique, parse_model_arg
from gradient_async.engine.registry import ENGINES, EngineUnavailable, engine_choices, resolve_engine
from gradient_async.server.faults import FaultSettings
from gradient_async.server.limits import DEFAULT_LIMITS, ServerLimits
from gradient_async.server.settings import (
    ServerSettings,
    default_data_dir,
    generate_token,
    load_credentials,
)

__all__ = ["TOKEN_ENV", "add_arguments", "build_limits", "build_settings", "explicit_token", "is_loopback", "run"]

DEFAULT_WORKSPACE = "local-workspace"
TOKEN_ENV = "GRADIENT_SERVER_TOKEN"
DEFAULT_SHUTDOWN_TIMEOUT = 30.0

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
    "body_timeout_s": "seconds a client may take to send its request body (408)",
    "requests_per_minute": "requests per minute per access token (429 + Retry-After); default: no limit",
    "tokens_per_minute": "tokens per minute per access token (429 + Retry-After); default: no limit",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `serve` options."""
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, loopback only)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    summaries = "; ".join(f"{e.name}: {e.summary}" for e in ENGINES.values())
    parser.add_argument(
        "--engine",
        choices=engine_choices(),
        default="auto",
        help=f"text engine ({summaries}); auto (default): the best one installed",
    )
    parser.add_argument(
        "--model",
        dest="models",
        action="append",
        type=_model_arg,
        default=[],
        metavar="PATH[=NAME]",
        help="a base model to serve: a Hugging Face model folder or a .gguf file (repeatable; "
        "default: the packaged SmolLM2-135M-Instruct); nothing is downloaded",
    )
    parser.add_argument(
        "--vllm-url",
        default=None,
        metavar="URL",
        help="--engine vllm: a running vLLM OpenAI-compatible server (it must see --data-dir at the same path); "
        "default: start vLLM as a child process",
    )
    parser.add_argument(
        "--vllm-python",
        type=Path,
        default=None,
        metavar="PATH",
        help="--engine vllm: the Python of the vLLM virtualenv (default: $GRADIENT_VLLM_PYTHON or the one "
        "`make vllm-venv` builds)",
    )
    parser.add_argument(
        "--vllm-arg",
        dest="vllm_args",
        action="append",
        default=[],
        metavar="ARG",
        help="--engine vllm: one more argument for the vLLM child, e.g. --vllm-arg=--tensor-parallel-size=2",
    )
    parser.add_argument("--data-dir", type=Path, default=None, help="where models and adapters are kept")
    parser.add_argument("--config", type=Path, default=None, help='JSON file: {"credentials": [{token, workspaces}]}')
    parser.add_argument(
        "--token",
        default=None,
        help=f"access token to accept (visible in ps: prefer {TOKEN_ENV} or --token-file; "
        "default: generated and printed, loopback only)",
    )
    parser.add_argument("--token-file", type=Path, default=None, help="read the access token from this file")
    parser.add_argument(
        "--shutdown-timeout",
        type=float,
        default=DEFAULT_SHUTDOWN_TIMEOUT,
        help="seconds in-flight requests get to finish after SIGTERM/SIGINT (default 30); "
        "a second signal exits at once",
    )
    parser.add_argument("--workspace", default=None, help=f"workspace for --token (default {DEFAULT_WORKSPACE})")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="add this latency to every API answer")
    parser.add_argument("--fail-rate", type=float, default=0.0, help="answer this fraction of requests with 503")
    parser.add_argument("--rate-limit-rps", type=float, default=None, help="answer 429 + Retry-After above this rate")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fault injection RNG")
    parser.add_argument("--log-level", default="info", help="uvicorn log level (default info)")
    parser.add_argument(
        "--log-format",
        choices=("json", "text"),
        default="text",
        help="access log: one line per request as JSON or key=value text (default text); never the token",
    )
    limits = parser.add_argument_group("limits (checked before any work; see the README)")
    for name, help_text in _LIMIT_HELP.items():
        default = getattr(DEFAULT_LIMITS, name)
        kind = float if name.endswith(("_per_minute", "_s")) else int
        shown = "" if default is None else f" (default {default})"
        limits.add_argument(
            f"--{name.replace('_', '-')}", dest=f"limit_{name}", type=kind, default=default, help=help_text + shown
        )


def build_limits(args: argparse.Namespace) -> ServerLimits:
    """The `ServerLimits` the limit flags describe (ValueError names a bad value)."""
    return ServerLimits(**{name: getattr(args, f"limit_{name}", getattr(DEFAULT_LIMITS, name)) for name in _LIMIT_HELP})


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def explicit_token(args: argparse.Namespace) -> str | None:
    """The token from --token, --token-file or GRADIENT_SERVER_TOKEN (in that order), if any."""
    if args.token:
        return str(args.token)
    if getattr(args, "token_file", None):
        path = Path(args.token_file)
        try:
            token = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ValueError(f"--token-file {path}: {exc.strerror or exc}") from None
        if not token or any(c.isspace() for c in token):
            raise ValueError(f"--token-file {path} must hold one token (no spaces)")
        return token
    return os.environ.get(TOKEN_ENV) or None


def _model_arg(text: str) -> object:
    try:
        return parse_model_arg(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_settings(args: argparse.Namespace) -> tuple[ServerSettings, str | None]:
    """Settings from the parsed options, plus the generated token (None when the user gave one)."""
    credentials: dict[str, set[str]] = load_credentials(args.config) if args.config else {}
    generated: str | None = None
    given = explicit_token(args)
    if given is None and not credentials and not is_loopback(args.host):
        raise ValueError(
            f"--host {args.host} is reachable from other machines, so the server needs an access token you chose: "
            f"set {TOKEN_ENV}, or use --token-file or --config (a generated token is only for loopback servers)"
        )
    if given or not credentials:
        token = given
        if not token:
            token = generated = generate_token()
        credentials.setdefault(token, set()).add(args.workspace or DEFAULT_WORKSPACE)
    elif args.workspace:
        raise ValueError("--workspace needs --token (or list workspaces in the --config file)")
    faults = FaultSettings(
        latency_ms=args.latency_ms, fail_rate=args.fail_rate, rate_limit_rps=args.rate_limit_rps, seed=args.seed
    )
    engine, _ = resolve_engine(args.engine)
    settings = ServerSettings(
        data_dir=args.data_dir or default_data_dir(),
        credentials=credentials,
        engine=engine,
        faults=faults,
        limits=build_limits(args),
        models=check_unique(getattr(args, "models", None) or ()),
        vllm_url=getattr(args, "vllm_url", None),
        vllm_python=getattr(args, "vllm_python", None),
        vllm_args=tuple(getattr(args, "vllm_args", None) or ()),
    )
    if settings.engine != "vllm" and (settings.vllm_url or settings.vllm_python or settings.vllm_args):
        raise ValueError("--vllm-url, --vllm-python and --vllm-arg need --engine vllm")
    return settings, generated


def run(args: argparse.Namespace) -> int:
    """Start the server and block until SIGINT/SIGTERM (uvicorn shuts down gracefully)."""
    try:
        from gradient_async.server.app import create_app
        from gradient_async.server.serving import serve
    except ImportError as exc:
        print(
            f"error: the server needs the [server] extra: pip install 'gradient-async[server]' ({exc})", file=sys.stderr
        )
        return 2
    try:
        settings, generated = build_settings(args)
    except (ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        app = create_app(settings)
    except (ValueError, RuntimeError, EngineUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (OSError, sqlite3.Error) as exc:
        print(f"error: cannot start: --data-dir {settings.data_dir}: {_describe_storage_error(exc)}", file=sys.stderr)
        return 2
    url = f"http://{args.host}:{args.port}/api"
    print(f"Gradient-compatible server: {url}  (engine: {settings.engine}, data: {settings.data_dir})")
    for token, workspaces in settings.credentials.items():
        # Only a token this process generated is printed; one you chose stays off the screen.
        shown = token if token == generated else "<your token>"
        for workspace in sorted(workspaces):
            print(f"  GRADIENT_API_URL={url} GRADIENT_ACCESS_TOKEN={shown} GRADIENT_WORKSPACE_ID={workspace}")
    sys.stdout.flush()
    if args.token and not generated:
        print(f"note: --token shows in ps; prefer {TOKEN_ENV} or --token-file", file=sys.stderr)
    # h11 refuses headers past this size itself (400); below it our 431 with a message applies.
    h11_limit = max(64 * 1024, 4 * settings.limits.max_header_bytes)
    from gradient_async.server.access_log import configure_access_log

    configure_access_log(args.log_format, level=args.log_level)  # our access line replaces uvicorn's
    serve(
        app,
        access_log=False,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        shutdown_timeout=args.shutdown_timeout,
        h11_max_incomplete_event_size=h11_limit,
    )
    return 0


def _describe_storage_error(exc: BaseException) -> str:
    """One line for a storage error at start-up (no traceback)."""
    from gradient_async.server.errors import disk_full

    text = str(exc).strip() or type(exc).__name__
    if disk_full(exc):
        return f"no space left ({text}); free some space and start again"
    if isinstance(exc, sqlite3.DatabaseError):
        return f"the catalogue gradient.sqlite3 cannot be opened ({text})"
    if isinstance(exc, OSError):
        return f"{exc.strerror or text} ({exc.filename or 'data dir'})"
    return text
