"""`gradient-async fine-tune`: one request with samples as arguments, or a whole run over a JSONL file.

With `--data`, the run goes over the file for `--epochs`, `--batch-size` samples per request (closed early
under `--max-request-bytes` / `--max-request-tokens`), in a seeded shuffled order, with a progress bar that
shows the running loss. `--checkpoint FILE` records every step before it is sent and when it is confirmed;
`--resume` continues that run without training any confirmed step twice. A step that was sent but never
confirmed stops the resume (it may or may not have been trained) unless `--resend-uncertain`.
Prints one line per epoch (and the scores with `--eval-data`), and a report with `--report`.

Example::

    gradient-async fine-tune ADAPTER_ID "Q: 2+2?\\nA: 4"          # one request
    gradient-async fine-tune ADAPTER_ID --data train.jsonl --epochs 3 --batch-size 8 \\
        --checkpoint run.ckpt.jsonl --eval-data eval.jsonl --scorer contains --report run.html
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import sys
from pathlib import Path
from typing import Literal

from gradient_async._client import AsyncGradient
from gradient_async._errors import GradientError, InputValidationError
from gradient_async.evaluation.report import write_report
from gradient_async.training import (
    DEFAULT_MAX_REQUEST_BYTES,
    CheckpointError,
    FineTuneRunResult,
    UncertainStepError,
    fine_tune_run,
)

__all__ = ["add_arguments", "run"]


def _int_at_least(low: int) -> type[int]:
    def parse(text: str) -> int:
        value = int(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {text}")
        return value

    return parse  # type: ignore[return-value]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `gradient-async fine-tune`."""
    parser.add_argument("adapter_id")
    parser.add_argument("samples", nargs="*", help="samples as arguments: one request (without --data)")
    parser.add_argument("--data", type=Path, default=None, help="JSONL training file: one sample per line")
    parser.add_argument("--epochs", type=_int_at_least(1), default=1, help="passes over the data (default 1)")
    parser.add_argument("--batch-size", type=_int_at_least(1), default=8, help="samples per request (default 8)")
    parser.add_argument("--seed", type=int, default=0, help="shuffle seed (default 0)")
    parser.add_argument("--no-shuffle", action="store_true", help="keep the file's order")
    parser.add_argument(
        "--max-request-bytes",
        type=_int_at_least(64),
        default=DEFAULT_MAX_REQUEST_BYTES,
        help=f"cap on one request body (default {DEFAULT_MAX_REQUEST_BYTES})",
    )
    parser.add_argument("--max-request-tokens", type=_int_at_least(1), default=None, help="cap on tokens per request")
    parser.add_argument("--checkpoint", type=Path, default=None, help="JSONL checkpoint of the run")
    parser.add_argument("--resume", action="store_true", help="continue the run in --checkpoint")
    parser.add_argument("--resend-uncertain", action="store_true", help="resend a step sent but never confirmed")
    parser.add_argument("--eval-data", type=Path, default=None, help="evaluate after each epoch on this JSONL file")
    parser.add_argument("--scorer", action="append", default=None, help="scorer for --eval-data (default contains)")
    parser.add_argument("--report", type=Path, default=None, help="write an HTML report (and a .md beside it)")
    parser.add_argument("--json", action="store_true", help="print the run (steps and epochs) as JSON")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar, even on a terminal")


def _epoch_line(run: FineTuneRunResult, index: int) -> str:
    e = run.epochs[index]
    loss = "–" if e.mean_loss is None else f"{e.mean_loss:.4f}"
    line = f"epoch {e.epoch}: {e.steps} steps, {e.trainable_tokens} trainable tokens, mean loss {loss}"
    for name, value in (e.scores or {}).items():
        line += f", {name} {'–' if value is None else f'{value:.3f}'}"
    return line


def _resume_hint(args: argparse.Namespace) -> str:
    """The command that continues this run: the one given (`args.argv`, set by `cli.main`) plus --resume."""
    given: list[str] = list(getattr(args, "argv", None) or [])
    argv = [a for a in given if a != "--resume"] if given[:1] == ["fine-tune"] else []
    return "gradient-async " + shlex.join([*argv, "--resume"]) if argv else "the same command with --resume"


async def _main(args: argparse.Namespace) -> int:
    async with AsyncGradient() as client:
        if args.data is None:
            result = await client.fine_tunes.create(args.adapter_id, samples=list(args.samples))
            print(json.dumps(result.to_wire(), indent=2))
            return 0
        progress: Literal["tqdm"] | None = "tqdm" if not args.no_progress and sys.stderr.isatty() else None
        try:
            run_result = await fine_tune_run(
                client,
                args.adapter_id,
                args.data,
                epochs=args.epochs,
                batch_size=args.batch_size,
                shuffle=not args.no_shuffle,
                seed=args.seed,
                max_request_bytes=args.max_request_bytes,
                max_request_tokens=args.max_request_tokens,
                checkpoint=args.checkpoint,
                resume=args.resume,
                resend_uncertain=args.resend_uncertain,
                progress=progress,
                eval_data=args.eval_data,
                scorers=args.scorer or ["contains"],
            )
        except (CheckpointError, InputValidationError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        except GradientError as exc:
            print(f"error: {exc}", file=sys.stderr)
            if args.checkpoint is not None and args.checkpoint.exists() and not isinstance(exc, UncertainStepError):
                print(f"checkpoint: {args.checkpoint}; continue with: {_resume_hint(args)}", file=sys.stderr)
            return 1
    if args.json:
        print(json.dumps(run_result.to_json(), indent=2))
    else:
        for index in range(len(run_result.epochs)):
            print(_epoch_line(run_result, index))
    print(
        f"fine-tune: {run_result.sent} requests sent, {run_result.skipped} steps already confirmed, "
        f"{len(run_result.steps)} steps in all",
        file=sys.stderr,
    )
    if args.report is not None:
        html_path, _ = write_report(args.report, run=run_result, title=f"Fine-tune of {args.adapter_id}")
        print(f"report: {html_path}", file=sys.stderr)
    return 0


def run(args: argparse.Namespace) -> int:
    """Entry point used by `gradient-async fine-tune`."""
    if args.data is None and not args.samples:
        print("error: give samples as arguments, or --data train.jsonl", file=sys.stderr)
        return 2
    if args.data is not None and args.samples:
        print("error: give samples as arguments or --data, not both", file=sys.stderr)
        return 2
    if args.data is None and (args.resume or args.checkpoint or args.eval_data or args.report):
        print("error: --checkpoint, --resume, --eval-data and --report need --data", file=sys.stderr)
        return 2
    if args.resume and args.checkpoint is None:
        print("error: --resume needs --checkpoint FILE (the run to continue)", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_main(args))
    except KeyboardInterrupt:
        if args.checkpoint is not None and args.checkpoint.exists():
            print(f"interrupted; continue with: {_resume_hint(args)}", file=sys.stderr)
        return 130
