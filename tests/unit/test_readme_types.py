"""The README's Python snippets type-check under `mypy --strict`, as a user's code would.

Complete snippets (the quickstart) are checked as modules. The others are fragments with a top-level
`await`: each is checked inside its own async function whose parameters are typed stand-ins for the
names a reader already has (`client`, `adapter_id`, `prompts`, `run`, ...).
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

PREAMBLE = """\
from collections.abc import AsyncIterator
from gradient_async import AsyncGradient, ModelAdapter
from gradient_async.training import FineTuneRunResult


async def read_prompts() -> AsyncIterator[str]:
    yield "Hi"

"""

SIGNATURE = """

async def _snippet_{n}(
    client: AsyncGradient,
    adapter: ModelAdapter,
    adapter_id: str,
    base_id: str,
    prompts: list[str],
    questions: list[str],
    texts: list[str],
    run: FineTuneRunResult,
) -> None:
"""


PROMISES = '''\
"""Typing promises beyond the README: checked in the same mypy run."""
from gradient_async import AsyncGradient, BaseModelHandle, Completion, RequestOptions
from gradient_async.batch import BatchItem


async def promises(client: AsyncGradient, item: BatchItem[Completion]) -> None:
    done: Completion = await client.request(RequestOptions("GET", "/x"), Completion.model_validate)  # T, not T | None
    bases: list[BaseModelHandle] = await client.models.list(only_base=True)
    if item.ok:
        text: str = item.value.generated_output  # narrowed: value is a Completion
    else:
        kind: str = type(item.error).__name__
    print(done, bases)
'''


def _blocks(text: str) -> list[str]:
    return [m.group(1) for m in re.finditer(r"^```python\n(.*?)^```", text, flags=re.S | re.M)]


def _is_module(source: str) -> bool:
    try:
        compile(source, "<readme>", "exec", dont_inherit=True)
    except SyntaxError:
        return False  # a fragment with a top-level await
    return True


def test_readme_snippets_pass_mypy_strict(tmp_path: Path) -> None:
    blocks = _blocks((ROOT / "README.md").read_text())
    assert blocks, "no python snippets found in README.md"
    files: list[Path] = []
    fragments: list[str] = []
    for i, block in enumerate(blocks):
        if _is_module(block):
            path = tmp_path / f"readme_snippet_{i}.py"
            path.write_text(block)
            files.append(path)
        else:
            fragments.append(SIGNATURE.format(n=i) + textwrap.indent(block, "    "))
    promises = tmp_path / "typing_promises.py"
    promises.write_text(PROMISES)
    files.append(promises)
    if fragments:
        path = tmp_path / "readme_fragments.py"
        path.write_text(PREAMBLE + "".join(fragments))
        files.append(path)
    mypy = [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", "--hide-error-context"]
    proc = subprocess.run(
        [*mypy, "--cache-dir", str(ROOT / ".mypy_cache"), *map(str, files)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
    )
    if proc.returncode != 0:
        listing = "\n\n".join(f"--- {f.name}\n{f.read_text()}" for f in files)
        pytest.fail(f"README snippets fail mypy --strict:\n{proc.stdout}{proc.stderr}\n{listing}")
