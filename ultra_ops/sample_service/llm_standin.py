"""An OpenAI-compatible LLM provider on loopback, so the prompt path runs end to end here.

`python -m ultra_ops.sample_service.llm_standin --port N`. Answers are deterministic (they count the
prompt's words), a bearer key is required when ULTRA_LLM_API_KEY is set, ULTRA_LLM_DELAY_MS adds
latency, and every answer reports a remaining-requests quota as OpenAI's headers do.
"""

from __future__ import annotations

import argparse
import hmac
import json
import os
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODELS = ("stand-in-small", "stand-in-large")
QUOTA = 10_000


class StandIn:
    def __init__(self, api_key: str | None, delay_s: float) -> None:
        self.api_key, self.delay_s = api_key, delay_s
        self._used = 0
        self._lock = threading.Lock()

    def authorized(self, header: str | None) -> bool:
        if not self.api_key:
            return True
        return hmac.compare_digest((header or "").encode(), f"Bearer {self.api_key}".encode())

    def remaining(self) -> int:
        with self._lock:
            self._used += 1
            return max(0, QUOTA - self._used)

    def complete(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not isinstance(messages[-1], dict):
            return 400, {"error": {"message": "messages must be a non-empty list"}}
        prompt = str(messages[-1].get("content", ""))
        words = len(prompt.split())
        text = f"stand-in answer: your prompt has {words} words"
        completion_tokens = len(text.split())
        return 200, {
            "id": f"cmpl-{time.monotonic_ns()}",
            "object": "chat.completion",
            "model": str(body.get("model") or MODELS[0]),
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
            "usage": {
                "prompt_tokens": words,
                "completion_tokens": completion_tokens,
                "total_tokens": words + completion_tokens,
            },
        }


def make_server(port: int, api_key: str | None = None, delay_s: float = 0.0) -> ThreadingHTTPServer:
    standin = StandIn(api_key, delay_s)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _answer(self, status: int, body: dict[str, Any]) -> None:
            if standin.delay_s:
                time.sleep(standin.delay_s)
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            if status == 200:
                self.send_header("x-ratelimit-limit-requests", str(QUOTA))
                self.send_header("x-ratelimit-remaining-requests", str(standin.remaining()))
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            if not standin.authorized(self.headers.get("Authorization")):
                self._answer(401, {"error": {"message": "invalid api key"}})
            elif self.path.split("?")[0] == "/v1/models":
                self._answer(200, {"object": "list", "data": [{"id": m, "object": "model"} for m in MODELS]})
            else:
                self._answer(404, {"error": {"message": "not found"}})

        def do_POST(self) -> None:  # noqa: N802
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            if not standin.authorized(self.headers.get("Authorization")):
                self._answer(401, {"error": {"message": "invalid api key"}})
            elif self.path.split("?")[0] != "/v1/chat/completions":
                self._answer(404, {"error": {"message": "not found"}})
            else:
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    self._answer(400, {"error": {"message": "body is not JSON"}})
                    return
                self._answer(*standin.complete(body if isinstance(body, dict) else {}))

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="llm_standin", description=__doc__)
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "0") or 0), required=False)
    args = parser.parse_args(argv)
    delay_s = float(os.environ.get("ULTRA_LLM_DELAY_MS") or 0) / 1000
    server = make_server(args.port, os.environ.get("ULTRA_LLM_API_KEY") or None, delay_s)

    def stop(signum: int, frame: object) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
