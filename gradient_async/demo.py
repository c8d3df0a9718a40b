"""`gradient-async demo`: the whole seed story, offline, against the embedded server.

Starts the Gradient-compatible server in-process (no socket; data in a per-user cache dir,
`--data-dir` elsewhere, `--fresh` in a temp dir), then through the SDK: list base models,
create an adapter, ask the Super Bowl question, fine-tune on the answer, ask again, print both
answers with tokens, loss and times, delete the adapter, run a batch of prompts behind a progress bar, and
finish with an evaluation: a few questions scored before and after a fine-tune run, a table, and an HTML
report in the data dir (`gradient_async.evaluation.demo`).

Example::

    gradient-async demo                      # local model if installed, else the test engine
    gradient-async demo --engine test --prompts 50
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import anyio
import httpx

from gradient_async._client import AsyncGradient
from gradient_async._errors import GradientError
from gradient_async.objects import BaseModelHandle

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = ["QUESTION", "ANSWER", "add_arguments", "run"]

QUESTION: Final = "Question: What NFL team won the Super Bowl in the year Justin Bieber was born?\n\nAnswer: "
ANSWER: Final = " Dallas Cowboys!"
MAX_FINE_TUNES: Final = 3
STORY_MAX_TOKENS: Final = 32
_TOKEN: Final = "demo-token"
_WORKSPACE: Final = "demo-workspace"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `demo` options."""
    from gradient_async.engine.registry import engine_choices

    parser.add_argument(
        "--engine",
        choices=engine_choices(),
        default="auto",
        help="auto (default): the best engine installed (the local model if its packages import, "
        "else the deterministic test engine)",
    )
    parser.add_argument(
        "--prompts",
        type=int,
        default=None,
        help="prompts in the closing batch (default 64 on the local model, else 200)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help="batch requests in flight (default 32 on the local model, else 16)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="the server's data dir (default: a per-user cache dir, so the local model's converted "
        "weights are reused; the demo deletes its adapter at the end)",
    )
    parser.add_argument("--fresh", action="store_true", help="use a temporary data dir, removed afterwards")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _answered(text: str) -> bool:
    return "dallas cowboys" in text.lower()


def _show(label: str, text: str, seconds: float) -> None:
    print(f"{label} ({seconds * 1000:.0f} ms): {text.strip()!r}")


async def _story(client: AsyncGradient, *, max_fine_tunes: int) -> bool:
    t0 = time.perf_counter()
    bases = await client.models.list(only_base=True)
    base = bases[-1]
    assert isinstance(base, BaseModelHandle)
    print(f"base models: {', '.join(b.slug for b in bases if isinstance(b, BaseModelHandle))} -> using {base.slug}")
    adapter = await base.create_adapter(name="my_model_adapter")
    print(f"created adapter {adapter.id} ({(time.perf_counter() - t0) * 1000:.0f} ms)")
    try:
        t = time.perf_counter()
        before = await adapter.complete(query=QUESTION, max_generated_token_count=STORY_MAX_TOKENS)
        _show("before fine-tuning", before.generated_output, time.perf_counter() - t)
        after = before
        for attempt in range(1, max_fine_tunes + 1):
            t = time.perf_counter()
            result = await adapter.fine_tune(samples=[{"inputs": QUESTION + ANSWER}])
            mean = result.mean_loss
            print(
                f"fine-tune #{attempt} ({(time.perf_counter() - t) * 1000:.0f} ms): "
                f"trainable tokens={result.number_of_trainable_tokens} sum loss={result.sum_loss:.4f}"
                + (f" mean loss={mean:.4f}" if mean is not None else "")
            )
            t = time.perf_counter()
            after = await adapter.complete(query=QUESTION, max_generated_token_count=STORY_MAX_TOKENS)
            _show("after fine-tuning", after.generated_output, time.perf_counter() - t)
            if _answered(after.generated_output):
                break
        return _answered(after.generated_output) and not _answered(before.generated_output)
    finally:
        await adapter.delete()
        print(f"deleted adapter {adapter.id}")


async def _batch(client: AsyncGradient, *, prompts: int, concurrency: int, progress: bool) -> None:
    if prompts <= 0:
        return
    base = (await client.models.list(only_base=True))[-1]
    queries = [f"Question: what is {i} + {i}?\n\nAnswer: " for i in range(prompts)]
    t = time.perf_counter()
    result = await client.completions.batch(
        base.id,
        queries,
        max_concurrency=concurrency,
        progress="tqdm" if progress else None,
        max_generated_token_count=16,
    )
    elapsed = time.perf_counter() - t
    print(
        f"batch: {result.ok}/{len(queries)} ok, {result.failed} failed in {elapsed:.2f} s "
        f"({len(queries) / elapsed:.0f} prompts/s, concurrency {concurrency})"
    )
    first = next((item for item in result if item.ok), None)
    if first is not None and first.value is not None:
        print(f"  e.g. {queries[first.index].strip()!r} -> {first.value.generated_output.strip()!r}")


async def _evaluation(client: AsyncGradient, data_dir: Path, *, local: bool, fresh: bool) -> None:
    from gradient_async.evaluation.demo import demo_evaluation

    base = (await client.models.list(only_base=True))[-1]
    out_dir = Path(tempfile.gettempdir()) / "gradient-async-demo" if fresh else data_dir
    await demo_evaluation(client, base_id=base.id, out_dir=out_dir, epochs=3 if local else 2)


def _build_app(engine: str, data_dir: Path) -> FastAPI:
    from gradient_async.engine.registry import ENGINES, resolve_engine
    from gradient_async.server.app import create_app
    from gradient_async.server.settings import ServerSettings

    name, skipped = resolve_engine(engine)
    print(f"engine: {name} ({ENGINES[name].summary})" + (f"; skipped {skipped}" if skipped else ""))
    settings = ServerSettings(data_dir=data_dir, credentials={_TOKEN: {_WORKSPACE}}, engine=name)
    return create_app(settings)


async def _main(args: argparse.Namespace, data_dir: Path) -> int:
    app = _build_app(args.engine, data_dir)
    state = app.state.gradient
    real = state.settings.engine != "test"
    max_fine_tunes = MAX_FINE_TUNES if real else 1
    try:
        t = time.perf_counter()
        await state.engine.warm_up()  # load the model now, so the timings below are the calls' own
        if real:
            print(f"model loaded in {time.perf_counter() - t:.1f} s")
        async with AsyncGradient(
            access_token=_TOKEN,
            workspace_id=_WORKSPACE,
            base_url="http://embedded/api",
            transport=httpx.ASGITransport(app=app),
            timeout=600.0,
        ) as client:
            flipped = await _story(client, max_fine_tunes=max_fine_tunes)
            print("the answer flipped after fine-tuning" if flipped else "the answer did NOT flip after fine-tuning")
            prompts = args.prompts if args.prompts is not None else (64 if real else 200)
            concurrency = args.concurrency if args.concurrency is not None else (32 if real else 16)
            await _batch(client, prompts=prompts, concurrency=concurrency, progress=not args.no_progress)
            await _evaluation(client, data_dir, local=real, fresh=args.fresh)
    finally:
        await state.aclose()
    return 0 if flipped else 1


def run(args: argparse.Namespace) -> int:
    """Run the demo; 0 when the answer flipped after fine-tuning.

    Example::

        gradient-async demo --engine test --prompts 200
    """
    if (args.prompts is not None and args.prompts < 0) or (args.concurrency is not None and args.concurrency < 1):
        print("error: --prompts must be >= 0 and --concurrency >= 1", file=sys.stderr)
        return 2
    try:
        import fastapi  # noqa: F401
    except ImportError:
        print("error: the demo needs the [server] extra: pip install 'gradient-async[server]'", file=sys.stderr)
        return 2
    quiet = _no_library_bars() if args.no_progress else contextlib.nullcontext()
    with quiet:
        return _run(args)


@contextlib.contextmanager
def _no_library_bars() -> Iterator[None]:
    """No tqdm bar at all while inside: libraries draw their own (transformers converts the GGUF behind one)."""
    try:
        from tqdm import std  # type: ignore[import-untyped,unused-ignore]
    except ImportError:
        yield
        return
    original = std.tqdm.__init__

    def quiet_init(self: Any, *args: Any, **kwargs: Any) -> None:
        kwargs["disable"] = True
        original(self, *args, **kwargs)

    std.tqdm.__init__ = quiet_init
    try:
        yield
    finally:
        std.tqdm.__init__ = original


def _run(args: argparse.Namespace) -> int:
    try:
        if args.fresh:
            with tempfile.TemporaryDirectory(prefix="gradient-demo-") as tmp:
                return anyio.run(_main, args, Path(tmp))
        if args.data_dir is None:
            from gradient_async.server.settings import default_data_dir

            args.data_dir = default_data_dir().parent / "demo"
        print(f"data dir: {args.data_dir}")
        return anyio.run(_main, args, Path(args.data_dir))
    except (GradientError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
