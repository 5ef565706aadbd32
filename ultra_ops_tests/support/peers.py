"""Real HTTP peers on loopback for the tests: endpoints with a chosen status and delay, LLM providers."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from ultra_ops_tests.support.ports import free_port

# A route answers (status, JSON body or text, delay in seconds) for the request's headers.
Route = Callable[[dict[str, str]], tuple[int, object, float]]

MODELS = {"data": [{"id": "model-a"}, {"id": "model-b"}]}


class HttpPeer:
    """A threaded HTTP server on its own free port that counts the requests per path."""

    def __init__(self, routes: dict[str, Route]) -> None:
        self.routes, self.hits = routes, Counter()
        self.released = threading.Event()  # lets sleeping handlers go at teardown
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _answer(self) -> None:
                path = self.path.split("?")[0]
                outer.hits[path] += 1
                route = outer.routes.get(path)
                status, body, delay = route(dict(self.headers)) if route else (404, "no route", 0.0)
                if delay:
                    outer.released.wait(delay)
                data = (json.dumps(body) if not isinstance(body, str) else body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client gave up (a timeout test)

            do_GET = do_POST = do_HEAD = _answer

        self.port = free_port()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.httpd.daemon_threads = True
        self.httpd.request_queue_size = 64
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self.released.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> HttpPeer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def fixed(status: int, body: object = "", delay: float = 0.0) -> Route:
    return lambda headers: (status, body, delay)


def openai_models(key: str) -> Route:
    """An OpenAI-style model listing that accepts only `key` (and, carelessly, echoes what it refused)."""

    def route(headers: dict[str, str]) -> tuple[int, object, float]:
        got = headers.get("Authorization", "")
        return (200, MODELS, 0) if got == f"Bearer {key}" else (401, {"error": f"bad key {got}"}, 0)

    return route


class LlmServer(HttpPeer):
    """One OpenAI-style provider at `url`."""

    def __init__(self, expected_key: str) -> None:
        super().__init__({"/v1/models": openai_models(expected_key)})
        self.url = super().url("/v1/models")

    def __enter__(self) -> LlmServer:
        return self
