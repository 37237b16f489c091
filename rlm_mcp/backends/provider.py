"""An OpenAI-compatible ``/chat/completions`` endpoint (llama.cpp server, Ollama, vLLM, OpenAI) over httpx.

Retries 429 and 5xx answers and connection failures with exponential backoff
(honouring ``Retry-After``), within a per-call deadline, so a slow or flapping
endpoint costs bounded time and a dead one fails with a clear message.
"""

from __future__ import annotations

import json
import random
from typing import Any

import anyio
import httpx

from ..errors import SubQueryFailed
from .base import ChatMessage, Completion

__all__ = ["ProviderBackend"]

_RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


class ProviderBackend:
    name = "provider"

    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 120.0,
        max_retries: int = 4,
        backoff: float = 0.5,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model or "default"
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        headers = {"Content-Type": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._client = httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=min(10.0, timeout)),
            transport=transport,
            follow_redirects=False,
            trust_env=False,
        )

    @property
    def url(self) -> str:
        return f"{self.base_url}/chat/completions"

    async def complete(self, messages: list[ChatMessage], *, system: str | None, max_tokens: int) -> Completion:
        chat: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
        chat.extend({"role": m["role"], "content": m["content"]} for m in messages)
        body = {"model": self.model, "messages": chat, "max_tokens": max_tokens, "temperature": 0.0, "stream": False}
        last_problem = "no attempt was made"
        try:
            with anyio.fail_after(self.timeout * 2 + 10):
                for attempt in range(self.max_retries + 1):
                    if attempt:
                        await anyio.sleep(self._delay(attempt, last_problem))
                    try:
                        response = await self._client.post(self.url, json=body)
                    except httpx.TimeoutException:
                        last_problem = f"no answer within {self.timeout:g} s"
                        continue
                    except httpx.TransportError as exc:
                        last_problem = f"cannot reach {self.base_url} ({type(exc).__name__}: {exc})"
                        continue
                    if response.status_code in _RETRY_STATUS:
                        last_problem = f"HTTP {response.status_code}"
                        self._retry_after = _retry_after(response)
                        continue
                    if response.status_code >= 400:
                        raise SubQueryFailed(
                            f"the provider refused the request: HTTP {response.status_code}: {response.text[:300]}"
                        )
                    return _parse(response)
        except TimeoutError as exc:
            raise SubQueryFailed(f"the provider at {self.base_url} did not answer in time ({last_problem})") from exc
        raise SubQueryFailed(
            f"the provider at {self.base_url} failed after {self.max_retries + 1} attempts: {last_problem}"
        )

    _retry_after: float | None = None

    async def probe(self, timeout: float = 3.0) -> dict[str, Any]:
        """Whether the endpoint answers at all (any HTTP status counts), for rlm_status: a wrong
        host or port shows up there instead of as slow failing sub-queries."""
        try:
            response = await self._client.get(f"{self.base_url}/models", timeout=timeout)
        except httpx.TimeoutException:
            return {"reachable": False, "problem": f"no answer within {timeout:g} s"}
        except httpx.TransportError as exc:
            return {"reachable": False, "problem": f"cannot reach {self.base_url} ({type(exc).__name__}: {exc})"}
        return {"reachable": True, "http_status": response.status_code}

    def _delay(self, attempt: int, problem: str) -> float:
        hinted, self._retry_after = self._retry_after, None
        base = self.backoff * (2 ** (attempt - 1))
        if hinted is not None:
            base = max(base, hinted)
        return min(base, 30.0) * (0.75 + random.random() / 2)

    async def aclose(self) -> None:
        await self._client.aclose()


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return min(float(value), 30.0) if value else None
    except ValueError:
        return None


def _parse(response: httpx.Response) -> Completion:
    try:
        data: Any = response.json()
        choice = data["choices"][0]
        content = choice["message"]["content"]
        if content is None:
            content = ""
        if not isinstance(content, str):
            raise TypeError("content is not text")
    except (json.JSONDecodeError, KeyError, IndexError, TypeError) as exc:
        raise SubQueryFailed(
            f"the provider returned an answer that is not an OpenAI chat completion: {response.text[:200]!r}"
        ) from exc
    usage = data.get("usage") if isinstance(data, dict) else None
    usage = usage if isinstance(usage, dict) else {}
    return Completion(
        text=content,
        prompt_tokens=_int_or_none(usage.get("prompt_tokens")),
        completion_tokens=_int_or_none(usage.get("completion_tokens")),
        model=data.get("model") if isinstance(data.get("model"), str) else None,
    )


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and value >= 0 else None
