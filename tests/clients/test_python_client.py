"""clients/python/rlm_demo.py: the scripted root model, run as a user runs it, in every mode."""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

DEMO = Path(__file__).resolve().parents[2] / "clients" / "python" / "rlm_demo.py"
SIZE_MB, SEED = "2", "11"


def load_demo():
    spec = importlib.util.spec_from_file_location("rlm_demo", DEMO)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


demo = load_demo()


def run_demo(*extra: str) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    done = subprocess.run([sys.executable, str(DEMO), "--size-mb", SIZE_MB, "--seed", SEED, *extra],
                          capture_output=True, text=True, timeout=120)
    return done, time.monotonic() - started


@pytest.mark.parametrize("extra", [(), ("--host-mode",), ("--protocol", "2026-07-28")],
                         ids=["sampling", "host-mode", "protocol-2026"])
def test_demo_answers_correctly_and_shows_its_trajectory(extra: tuple[str, ...]):
    done, took = run_demo(*extra)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    expected = demo.ground_truth(demo.generate_log(float(SIZE_MB), int(SEED)))
    assert done.stdout.splitlines()[-1] == f"PASS: {expected}"
    assert took < 30, f"the demo took {took:.1f}s"
    calls = [line.split("]", 1)[1].split("(", 1)[0].strip() for line in done.stdout.splitlines()
             if line.startswith("[")]
    host = "--host-mode" in extra
    assert calls == ["load_context", "peek", "peek", "search", "search", "exec_python", "exec_python",
                     *(["answer_sub_queries"] if host else []), "exec_python", "rlm_status"]
    assert "llm_query_batched" in done.stdout and "FINAL(" in done.stdout
    if host:
        assert "status: paused" in done.stdout and "sub_llm: host" in done.stdout
    else:
        assert "sampling: the tiny model answered" in done.stdout


def test_tiny_model_computes_its_answer_from_the_prompt():
    prompt = ("1. Count the lines matching the regex `level=ERROR code=(E\\d+)`, per error code.\n"
              "2. Quote every line that mentions `access code`.\n\nLOG CHUNK 1/1:\n"
              "a level=ERROR code=E7 x\nb level=WARN code=E7\nc level=ERROR code=E9\nd the Access Code is 1\n")
    assert json.loads(demo.tiny_model(prompt)) == {"counts": {"E7": 1, "E9": 1},
                                                    "quotes": ["d the Access Code is 1"]}
    assert json.loads(demo.tiny_model("no instructions\nLOG CHUNK 1/1:\nlevel=ERROR code=E1\n")) == {
        "counts": {}, "quotes": []}


def test_generated_log_is_deterministic_and_holds_its_facts():
    text = demo.generate_log(0.3, 5)
    assert text == demo.generate_log(0.3, 5) != demo.generate_log(0.3, 6)
    assert 300_000 <= len(text) < 301_000
    assert text.count("access code") == 2 and "level=WARN code=E" in text
    errors = demo.ground_truth(text).split("; ")[0]
    assert errors == f"errors={text.count('level=ERROR')}"


async def test_a_wrong_answer_fails_the_run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture):
    def forgetful(prompt: str) -> str:  # a sub-LLM that misses every E1042 line
        answer = json.loads(demo.tiny_model(prompt))
        answer["counts"].pop("E1042", None)
        return json.dumps(answer)

    monkeypatch.setattr(demo, "tiny_model", forgetful)
    status = await demo.main(argparse.Namespace(size_mb=0.3, seed=1, host_mode=False, protocol="2025-11-25"))
    assert status == 1
    assert capsys.readouterr().out.splitlines()[-1].startswith("FAIL: the final answer")
