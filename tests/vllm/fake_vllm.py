"""A fake vLLM OpenAI-compatible server (stdlib only) for the fast vLLM engine tests.

Run as `python fake_vllm.py -m vllm.entrypoints.openai.api_server --model DIR --served-model-name NAME
--port P ...` (the arguments the engine gives the real one; a wrapper script stands in for the venv's
python). It keeps loaded LoRAs like vLLM and answers completions with JSON describing the request,
so tests can check the mapping. `FAKE_VLLM_EXIT=N` makes it exit with N before serving (a start-up
failure); `FAKE_VLLM_EMBED=1` serves `/v1/embeddings`.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def arg(name: str, default: str = "") -> str:
    argv = sys.argv
    return argv[argv.index(name) + 1] if name in argv else default


SERVED = arg("--served-model-name", "model")
MAX_LORA_RANK = int(arg("--max-lora-rank", "16"))
LORAS: dict[str, str] = {}
LOG: list[dict[str, object]] = []
LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass

    def _send(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str) -> None:
        self._send(status, {"error": {"message": message, "type": "BadRequestError", "code": status}})

    def do_GET(self) -> None:
        if self.path == "/health":
            self._send(200, {})
        elif self.path == "/v1/models":
            models = [{"id": SERVED, "parent": None}] + [{"id": n, "parent": SERVED} for n in LORAS]
            self._send(200, {"object": "list", "data": models})
        elif self.path == "/fake/log":
            self._send(200, {"loras": LORAS, "requests": LOG})
        else:
            self._error(404, "not found")

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", "0"))) or b"{}")
        with LOCK:
            LOG.append({"path": self.path, "body": body})
            if self.path == "/v1/load_lora_adapter":
                name, path = body.get("lora_name"), body.get("lora_path")
                if name in LORAS:
                    return self._error(400, f"The lora adapter '{name}' has already been loaded.")
                if not (Path(path) / "adapter_config.json").is_file():
                    return self._error(404, f"Loading lora {name} failed: No adapter found for {path}")
                rank = json.loads((Path(path) / "adapter_config.json").read_text()).get("r", 8)
                if rank > MAX_LORA_RANK:  # vLLM's own words
                    return self._error(400, f"LoRA rank {rank} is greater than max_lora_rank {MAX_LORA_RANK}.")
                LORAS[name] = path
                return self._send(200, f"Success: LoRA adapter '{name}' added successfully.")
            if self.path == "/v1/unload_lora_adapter":
                if body.get("lora_name") not in LORAS:
                    return self._error(404, f"The lora adapter '{body.get('lora_name')}' cannot be found.")
                del LORAS[body["lora_name"]]
                return self._send(200, "Success")
            if self.path == "/v1/embeddings":
                if os.environ.get("FAKE_VLLM_EMBED") != "1":
                    return self._error(404, "The model does not support Embeddings API")
                inputs = body["input"]
                vectors = [{"index": i, "embedding": [float(len(t)), 1.0]} for i, t in enumerate(inputs)]
                return self._send(200, {"data": vectors})
            if self.path == "/v1/completions":
                model = body.get("model")
                if model != SERVED and model not in LORAS:
                    return self._error(404, f"The model `{model}` does not exist.")
                if len(body.get("prompt", "")) > 2000:
                    return self._error(400, "This model's maximum context length is 2048 tokens.")
                choices = (body.get("structured_outputs") or {}).get("choice")
                text = choices[-1] if choices else "echo:" + json.dumps(body, sort_keys=True)
                reason = "length" if body.get("max_tokens") == 1 else "stop"
                if model in LORAS:
                    text = f"[{model}] " + text
                return self._send(200, {"choices": [{"index": 0, "text": text, "finish_reason": reason}]})
        self._error(404, "not found")


def main() -> None:
    code = os.environ.get("FAKE_VLLM_EXIT")
    print(f"fake vLLM starting: {' '.join(sys.argv[1:])}", flush=True)
    if code:
        print("RuntimeError: fake start-up failure", flush=True)
        sys.exit(int(code))
    server = ThreadingHTTPServer(("127.0.0.1", int(arg("--port", "8000"))), Handler)
    server.serve_forever()


if __name__ == "__main__":
    main()
