"""A loopback OpenAI-compatible endpoint with fixed latency, for benchmarks that must not depend on a
real model's speed. Runs uvicorn in a thread; ``with serve(latency) as url:``."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ._common import free_port

__all__ = ["serve"]


@contextmanager
def serve(latency: float) -> Iterator[str]:
    async def chat(request: Request) -> JSONResponse:
        body = await request.json()
        await asyncio.sleep(latency)
        text = f"answer to: {body['messages'][-1]['content'][:40]}"
        return JSONResponse({"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}],
                             "usage": {"prompt_tokens": 20, "completion_tokens": 8}})

    port = free_port()
    app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(10)
