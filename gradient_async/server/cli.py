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

from gradient_async.engine.models import check_unique, parse_model_arg
from gradient_async.engine.registry import ENGINES, EngineUnavailable, engine_choices, resolve_engine
from gradient_async.server.faults import FaultSettings
from gradient_async.server.settings import (
    ServerSettings,
    default_data_dir,
    generate_token,
    load_credentials,
)

__all__ = ["add_arguments", "build_settings", "run"]

DEFAULT_WORKSPACE = "local-workspace"


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
    parser.add_argument("--token", default=None, help="access token to accept (default: generated and printed)")
    parser.add_argument("--workspace", default=None, help=f"workspace for --token (default {DEFAULT_WORKSPACE})")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="add this latency to every API answer")
    parser.add_argument("--fail-rate", type=float, default=0.0, help="answer this fraction of requests with 503")
    parser.add_argument("--rate-limit-rps", type=float, default=None, help="answer 429 + Retry-After above this rate")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fault injection RNG")
    parser.add_argument("--log-level", default="info", help="uvicorn log level (default info)")


def _model_arg(text: str) -> object:
    try:
        return parse_model_arg(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


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
    engine, _ = resolve_engine(args.engine)
    settings = ServerSettings(
        data_dir=args.data_dir or default_data_dir(),
        credentials=credentials,
        engine=engine,
        faults=faults,
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
    except (ValueError, RuntimeError, EngineUnavailable) as exc:
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
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0
