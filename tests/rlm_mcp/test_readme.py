"""The README is a newcomer's path: its reference pages exist and are linked, and its worked example runs."""

from __future__ import annotations

import re
from pathlib import Path

from mcp import types

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"


def test_every_docs_page_is_linked_from_the_readme():
    text = README.read_text()
    pages = sorted(p.name for p in (ROOT / "docs").glob("*.md"))
    assert pages, "docs/ holds no pages"
    missing = [name for name in pages if f"](docs/{name}" not in text]
    assert not missing, f"README.md links no docs/{missing}: add them to its Reference list"


def test_every_relative_link_in_the_readme_and_docs_resolves():
    for page in [README, *(ROOT / "docs").glob("*.md")]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" in target:
                continue
            assert (page.parent / target).exists(), f"{page.name} links {target}, which does not exist"


def test_the_readme_says_what_it_is_before_any_reference():
    text = README.read_text()
    assert text.index("## What it is") < text.index("## Attach it to a host") < text.index("## A worked example")
    assert text.index("## A worked example") < text.index("## Reference")
    assert len(text.splitlines()) < 130, "the README is a newcomer's page: keep the reference in docs/"


def _log(errors: int) -> str:
    lines = []
    for i in range(4000):
        if i % (4000 // errors) == 0:
            code = "E42" if i % 3 else "E7"
            lines.append(f"2025-03-01T00:00:{i % 60:02d}Z api level=ERROR code={code} msg=\"disk quota exceeded\"")
        else:
            lines.append(f"2025-03-01T00:00:{i % 60:02d}Z api level=INFO msg=\"request served\"")
    return "\n".join(lines)


async def _model(context, params: types.CreateMessageRequestParams):
    return types.CreateMessageResult(role="assistant", model="test-model",
                                     content=types.TextContent(type="text", text="they all ran out of disk quota"))


async def test_the_worked_example_runs_as_written(make_client, tmp_path: Path):
    """The README's exec_python code, over a log folder loaded as the README loads it, ends in FINAL."""
    code = README.read_text().split("```python\n", 1)[1].split("```", 1)[0]
    code = "\n".join(line[3:] if line.startswith("   ") else line for line in code.splitlines())
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "app.log").write_text(_log(100))
    async with make_client("legacy", sampling_callback=_model) as client:
        loaded = await client.call_tool("load_context", {"path": "logs", "name": "logs"})
        assert not loaded.is_error, loaded.content[0].text
        result = (await client.call_tool("exec_python", {"code": code})).structured_content
    assert result["status"] == "ok", result
    assert result["final"].startswith("100 ERROR lines; most frequent E42 (66)."), result["final"]
    assert result["final"].endswith("they all ran out of disk quota")
