"""The Gradient <-> vLLM mapping for completions (pure functions, no I/O).

Gradient `complete` -> vLLM `POST /v1/completions`:

=========================  ==========================================================
Gradient                   vLLM
=========================  ==========================================================
query                      prompt (rendered with the chat template when autoTemplate;
                           then `add_special_tokens: false`, the template has them)
maxGeneratedTokenCount     max_tokens (engine default when absent)
temperature, topK, topP    temperature (0 when absent: greedy), top_k, top_p
guidance choice            structured_outputs: {"choice": [...]}
model / adapter            model: the base model's served name, or the adapter's
                           versioned LoRA name
finish_reason              "length" -> "length"; everything else -> "stop"
=========================  ==========================================================
"""

from __future__ import annotations

from typing import Any

from gradient_async.engine.base import EngineError, FinishReason, GenerationRequest, GenerationResult

__all__ = ["completion_body", "completion_result", "error_message", "finish_reason"]


def completion_body(
    request: GenerationRequest, *, model: str, prompt: str, templated: bool, max_tokens: int
) -> dict[str, Any]:
    """The `/v1/completions` JSON for one request (`prompt` already templated when `templated`).
    Like the local engine: temperature 0/None or topK 1 is greedy, else sampling."""
    sampling = bool(request.temperature) and request.top_k != 1
    body: dict[str, Any] = {
        "model": model,
        "prompt": prompt,
        "max_tokens": request.max_new_tokens or max_tokens,
        "temperature": request.temperature if sampling else 0.0,
        "n": 1,
        "stream": False,
    }
    if templated:
        body["add_special_tokens"] = False
    if sampling and request.top_k:
        body["top_k"] = request.top_k
    if sampling and request.top_p is not None:
        body["top_p"] = request.top_p
    if request.guidance_choices is not None:
        body["structured_outputs"] = {"choice": list(request.guidance_choices)}
    return body


def finish_reason(value: object) -> FinishReason:
    """vLLM's finish reason as the contract's: only a token cap is "length"."""
    return "length" if value == "length" else "stop"


def completion_result(data: object) -> GenerationResult:
    """The first choice of a `/v1/completions` answer; EngineError (502) when it is malformed."""
    try:
        choice = data["choices"][0]  # type: ignore[index]
        text = choice["text"]
    except (KeyError, IndexError, TypeError):
        raise EngineError(
            f"the vLLM server sent an unexpected completion: {str(data)[:200]}", type="engineError", status_code=502
        ) from None
    if not isinstance(text, str):
        raise EngineError("the vLLM server sent a completion without text", type="engineError", status_code=502)
    usage = data.get("usage") if isinstance(data, dict) else None
    generated = usage.get("completion_tokens") if isinstance(usage, dict) else None
    return GenerationResult(
        text=text,
        finish_reason=finish_reason(choice.get("finish_reason")),
        generated_tokens=generated if isinstance(generated, int) and not isinstance(generated, bool) else None,
    )


def error_message(data: object, fallback: str) -> str:
    """The message of a vLLM/OpenAI error body (`{"error": {"message"}}` or `{"message"}`), else `fallback`."""
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
        if isinstance(data.get("message"), str):
            return str(data["message"])
    return fallback
