"""The service's call to its LLM provider: one OpenAI-compatible chat completion."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import httpx

_TIMEOUT_S = 30


@dataclass(frozen=True)
class Completion:
    text: str
    model: str
    usage: dict[str, int]
    seconds: float


class LLMError(Exception):
    """The provider did not answer with a completion; the message names why, never the key."""


def complete(base_url: str, api_key: str | None, model: str, prompt: str, max_tokens: int) -> Completion:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    body = {"model": model, "max_tokens": max_tokens, "messages": [{"role": "user", "content": prompt}]}
    start = time.perf_counter()
    try:
        response = httpx.post(
            base_url.rstrip("/") + "/chat/completions", json=body, headers=headers, timeout=_TIMEOUT_S
        )
    except httpx.HTTPError as exc:
        raise LLMError(f"LLM provider unreachable: {type(exc).__name__}") from None
    seconds = time.perf_counter() - start
    if response.status_code != 200:
        raise LLMError(f"LLM provider answered HTTP {response.status_code}")
    try:
        data: dict[str, Any] = response.json()
        text = data["choices"][0]["message"]["content"]
        usage = {k: int(v) for k, v in data.get("usage", {}).items() if isinstance(v, int)}
        return Completion(text=str(text), model=str(data.get("model", model)), usage=usage, seconds=seconds)
    except (ValueError, KeyError, IndexError, TypeError):
        raise LLMError("LLM provider answered without a completion") from None
