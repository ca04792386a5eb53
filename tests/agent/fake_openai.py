"""A local fake OpenAI-compatible server over real HTTP, with a scripted queue of answers.

Serves POST /v1/chat/completions on 127.0.0.1 (random port) from a background thread. Each request
pops the next scripted answer: a tool call, a plain content message (a plan, malformed JSON, ...), a
slow answer (sleeps before replying, to trip the client timeout) or an HTTP error. Every request body
is kept in ``.requests`` so tests can assert what the planner sent (tools offered, delimiters).
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def tool_call(name: str, args: dict[str, Any], call_id: str = "call_1") -> dict[str, Any]:
    return {"kind": "tool_calls", "calls": [{"id": call_id, "name": name, "arguments": json.dumps(args)}]}


def content(text: str, *, prompt_tokens: int = 50, completion_tokens: int = 50) -> dict[str, Any]:
    return {"kind": "content", "text": text, "usage": (prompt_tokens, completion_tokens)}


def plan_json(steps: list[dict[str, Any]], summary: str = "scripted plan", confidence: float = 0.9) -> dict[str, Any]:
    return content(json.dumps({"summary": summary, "confidence": confidence, "steps": steps}))


def slow(seconds: float, then: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"kind": "slow", "seconds": seconds, "then": then or content("{}")}


def http_error(status: int = 500) -> dict[str, Any]:
    return {"kind": "error", "status": status}


class FakeOpenAI:
    def __init__(self) -> None:
        self.script: deque[dict[str, Any]] = deque()
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server naming
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                with fake._lock:
                    fake.requests.append({"path": self.path, "body": body})
                    item = fake.script.popleft() if fake.script else http_error(503)
                if not self.path.endswith("/chat/completions"):
                    item = http_error(404)
                if item["kind"] == "slow":
                    time.sleep(item["seconds"])
                    item = item["then"]
                if item["kind"] == "error":
                    self._send(item["status"], {"error": {"message": "scripted failure", "type": "server_error"}})
                    return
                self._send(200, _completion(body.get("model", "fake"), item))

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        port = self.server.server_address[1]
        return f"http://127.0.0.1:{port}/v1"

    def push(self, *items: dict[str, Any]) -> None:
        with self._lock:
            self.script.extend(items)

    def __enter__(self) -> FakeOpenAI:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def _completion(model: str, item: dict[str, Any]) -> dict[str, Any]:
    if item["kind"] == "tool_calls":
        message: dict[str, Any] = {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
                for c in item["calls"]
            ],
        }
        finish, usage = "tool_calls", (40, 20)
    else:
        message = {"role": "assistant", "content": item["text"]}
        finish, usage = "stop", item.get("usage", (50, 50))
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
        "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": sum(usage)},
    }
