"""A real OpenAI-compatible HTTP server on loopback for tests: latency, injected errors, a script.

It speaks ``POST /v1/chat/completions`` like llama.cpp's server or Ollama, runs in a
thread with its own event loop (uvicorn + starlette, already dependencies of mcp),
and records every request so tests can check order and concurrency.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Route

from conftest import free_port


def default_answer(messages: list[dict[str, str]]) -> str:
    return f"ANSWER[{messages[-1]['content'][:60]}]"


@dataclass
class FakeOpenAI:
    latency: float = 0.0
    answer: Callable[[list[dict[str, str]]], str] = default_answer
    # Status codes to return, in order, before answering normally (e.g. [429, 500]).
    failures: list[int] = field(default_factory=list)
    garbage: bool = False
    requests: list[dict[str, Any]] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    url: str = ""

    async def chat(self, request: Request) -> Any:
        body = await request.json()
        self.requests.append(body)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.latency:
                await asyncio.sleep(self.latency)
            if self.failures:
                status = self.failures.pop(0)
                return JSONResponse({"error": {"message": "injected"}}, status_code=status,
                                    headers={"Retry-After": "0"} if status == 429 else None)
            if self.garbage:
                return PlainTextResponse("<html>not json</html>")
            text = self.answer(body["messages"])
            if body.get("stream"):
                return _stream(text, body)
            return JSONResponse({
                "id": "x", "object": "chat.completion", "model": body.get("model", "m"),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
            })
        finally:
            self.in_flight -= 1


def _stream(text: str, body: dict[str, Any]) -> StreamingResponse:
    """The answer as server-sent chunks, as OpenAI streams it (clients such as fast-agent ask for
    ``stream: true``): a role, the text in pieces, a finish reason, usage if asked, then [DONE]."""
    model = body.get("model", "m")

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        data = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
        return f"data: {json.dumps(data)}\n\n"

    def events() -> Iterator[str]:
        yield chunk({"role": "assistant", "content": ""})
        for i in range(0, len(text), 16):
            yield chunk({"content": text[i:i + 16]})
        yield chunk({}, "stop")
        if (body.get("stream_options") or {}).get("include_usage"):
            usage = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
            last = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": model, "choices": [],
                    "usage": usage}
            yield f"data: {json.dumps(last)}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


@contextmanager
def serve_fake_openai(fake: FakeOpenAI) -> Iterator[FakeOpenAI]:
    port = free_port()
    app = Starlette(routes=[Route("/v1/chat/completions", fake.chat, methods=["POST"])])
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("fake OpenAI server did not start")
        time.sleep(0.01)
    fake.url = f"http://127.0.0.1:{port}/v1"
    try:
        yield fake
    finally:
        server.should_exit = True
        thread.join(10)
