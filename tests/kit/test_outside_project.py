"""The test kit as a new user meets it: a fresh project, the package installed from a wheel, pytest's
default (strict) asyncio mode, the README's snippet pasted as is, and a FastAPI service whose own
HTTP calls must pass while `mock_gradient` answers Gradient."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

PYPROJECT = """\
[project]
name = "my-service"
version = "0.1.0"
dependencies = ["gradient-async[testing]"]
"""

SERVICE = """\
import httpx
from fastapi import FastAPI

from gradient_async import AsyncGradient

def make_app(weather_url: str) -> FastAPI:
    app = FastAPI()

    @app.get("/summary")
    async def summary(city: str) -> dict[str, str]:
        async with httpx.AsyncClient() as http:               # the service's own call, another host
            weather = (await http.get(f"{weather_url}/weather", params={"city": city})).json()["sky"]
        async with AsyncGradient() as gradient:               # credentials from the environment
            base = (await gradient.models.list(only_base=True))[-1]
            out = await gradient.completions.create(base.id, query=f"Weather in {city}: {weather}")
        return {"weather": weather, "summary": out.generated_output}

    return app
"""

SERVICE_TEST = """\
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from service import make_app


class Weather(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"sky": "sunny"}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def weather_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Weather)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


async def test_summary_endpoint(mock_gradient, weather_url):
    app = make_app(weather_url)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://service") as http:
        resp = await http.get("/summary", params={"city": "Oslo"})
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"weather": "sunny", "summary": "echo: Weather in Oslo: sunny"}
    assert mock_gradient["complete"].call_count == 1
"""


def _readme_snippet() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Testing code that uses Gradient", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert blocks, "README's test-kit section has no python snippet"
    return blocks[0]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out), str(ROOT)],
        check=True,
        timeout=300,
    )
    (found,) = out.glob("gradient_async-*.whl")
    return found


def _project(tmp_path: Path, wheel: Path) -> Path:
    """A new project with its own venv: the wheel installed, the dependencies seen from this venv."""
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    ours = [p for p in sys.path if p.endswith("site-packages")]
    # the dependencies come from this venv (offline, fast); gradient_async itself only from the wheel
    Path(site, "deps.pth").write_text("\n".join(ours) + "\n", encoding="utf-8")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", site, str(wheel)],
        check=True,
        timeout=300,
    )
    (tmp_path / "pyproject.toml").write_text(PYPROJECT, encoding="utf-8")
    return python


def _pytest(python: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GRADIENT_", "PYTEST_"))}
    return subprocess.run(
        [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:anyio"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_readme_snippet_and_a_fastapi_service_in_a_new_project(tmp_path: Path, wheel: Path) -> None:
    python = _project(tmp_path, wheel)
    (tmp_path / "test_readme.py").write_text(_readme_snippet(), encoding="utf-8")
    (tmp_path / "service.py").write_text(SERVICE, encoding="utf-8")
    (tmp_path / "test_service.py").write_text(SERVICE_TEST, encoding="utf-8")
    where = subprocess.run(
        [str(python), "-c", "import gradient_async; print(gradient_async.__file__)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert str(ROOT) not in where  # the installed wheel, not this checkout
    proc = _pytest(python, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"\b\d+ passed\b", proc.stdout) and "failed" not in proc.stdout, proc.stdout


def test_a_missing_server_extra_fails_naming_it(tmp_path: Path, wheel: Path) -> None:
    python = _project(tmp_path, wheel)
    (tmp_path / "conftest.py").write_text("import sys\nsys.modules['fastapi'] = None\n", encoding="utf-8")
    (tmp_path / "test_server.py").write_text(
        "async def test_it(gradient_server):\n    assert gradient_server.client\n", encoding="utf-8"
    )
    proc = _pytest(python, tmp_path)
    assert proc.returncode == 1, proc.stdout
    assert re.search(r"\b1 (failed|error)\b", proc.stdout) and "skipped" not in proc.stdout, proc.stdout
    assert 'pip install "gradient-async[testing]"' in proc.stdout
