"""Zip and tar bundles built at test time: each member under its own header and checked as a file
would be (caps, binary, unsafe names, links, nested containers), bombs refused at the cap."""

from __future__ import annotations

import gzip
import io
import tarfile
import zipfile
from pathlib import Path

import pytest
from documents import make_docx, make_pdf

from rlm_mcp.errors import SourceError, TooLarge
from rlm_mcp.loaders import LoadLimits, load_path
from support import call


def make_zip(path: Path, members: list[tuple[str, bytes]], *, symlinks: tuple[str, ...] = ()) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members:
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            if name in symlinks:
                info.external_attr = (0o120777 << 16)
            z.writestr(info, data)
    return path


def make_tar(path: Path, members: list[tuple[str, bytes | str]], mode: str = "w:gz") -> Path:
    """``str`` data is a symlink's target."""
    with tarfile.open(path, mode) as t:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if isinstance(data, str):
                info.type, info.linkname = tarfile.SYMTYPE, data
                t.addfile(info)
            else:
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def bundles(tmp_path: Path) -> Path:
    root = tmp_path / "bundles"
    root.mkdir()
    make_zip(root / "papers.zip", [
        ("readme.txt", b"read me first\n"),
        ("docs/paper.pdf", make_pdf(["Abstract.", "Results."])),
        ("docs/memo.docx", make_docx(["# Memo", "Ship it."])),
        ("page.html", b"<h2>Title</h2><script>evil()</script><li>point</li>"),
        ("../escape.txt", b"outside\n"),
        ("/etc/abs.txt", b"absolute\n"),
        ("link.txt", b"/etc/passwd"),
        ("image.png", b"\x89PNG\r\n\x1a\n\x00\x00" + bytes(2000)),
        ("inner.zip", b"PK\x03\x04 nested"),
        ("__MACOSX/._readme.txt", b"\x00\x05\x16\x07"),
        ("bad.pdf", b"%PDF-1.4 broken"),
    ], symlinks=("link.txt",))
    make_tar(root / "logs.tar.gz", [("logs/a.log", b"first log\n"), ("logs/b.log.txt", b"second log\n"),
                                    ("logs/current", "/etc/shadow"), ("logs/../../up.txt", b"up\n")])
    make_tar(root / "plain.tar", [("x.md", b"# plain tar\n")], mode="w")
    return root


async def test_members_load_each_under_its_own_header_in_archive_order(bundles):
    src = await load_path(str(bundles), LoadLimits(roots=[bundles]))
    assert src.files == ["logs.tar.gz/logs/a.log", "logs.tar.gz/logs/b.log.txt", "papers.zip/readme.txt",
                         "papers.zip/docs/paper.pdf", "papers.zip/docs/memo.docx", "papers.zip/page.html",
                         "plain.tar/x.md"]
    assert src.text == (
        "==> logs.tar.gz/logs/a.log <==\nfirst log\n==> logs.tar.gz/logs/b.log.txt <==\nsecond log\n"
        "==> papers.zip/readme.txt <==\nread me first\n"
        "==> papers.zip/docs/paper.pdf <==\n--- page 1 ---\nAbstract.\n--- page 2 ---\nResults.\n"
        "==> papers.zip/docs/memo.docx <==\n# Memo\nShip it.\n"
        "==> papers.zip/page.html <==\n## Title\n- point\n"
        "==> plain.tar/x.md <==\n# plain tar\n"
    )
    assert src.converters == {"logs.tar.gz": "tar", "papers.zip": "zip", "papers.zip/docs/paper.pdf": "pdf",
                              "papers.zip/docs/memo.docx": "docx", "papers.zip/page.html": "html", "plain.tar": "tar"}


async def test_unsafe_names_links_binaries_and_nested_containers_are_skipped_with_reasons(bundles):
    src = await load_path(str(bundles), LoadLimits(roots=[bundles]))
    reasons = {s["path"]: s["reason"] for s in src.skipped}
    assert reasons == {
        "logs.tar.gz/logs/current": "link, not followed",
        "logs.tar.gz/logs/../../up.txt": "unsafe path ('..' leads out of the archive), not read",
        "papers.zip/../escape.txt": "unsafe path ('..' leads out of the archive), not read",
        "papers.zip//etc/abs.txt": "unsafe path (absolute), not read",
        "papers.zip/link.txt": "symlink, not followed",
        "papers.zip/image.png": "binary",
        "papers.zip/inner.zip": "zip inside another container; extract it first",
        "papers.zip/__MACOSX/._readme.txt": "hidden",
        "papers.zip/bad.pdf": reasons["papers.zip/bad.pdf"],
    }
    assert reasons["papers.zip/bad.pdf"].startswith("broken PDF")
    assert "outside" not in src.text and "absolute" not in src.text and "root:" not in src.text


async def test_a_zip_bomb_is_refused_at_the_cap_without_expanding(tmp_path: Path):
    make_zip(tmp_path / "bomb.zip", [("a.txt", b"A" * (48 << 20))])
    assert (tmp_path / "bomb.zip").stat().st_size < 200_000
    with pytest.raises(TooLarge, match="expands past the load cap"):
        await load_path("bomb.zip", LoadLimits(roots=[tmp_path], max_bytes=4 << 20))


async def test_a_tar_gz_bomb_is_refused_even_when_its_members_are_binary(tmp_path: Path):
    make_tar(tmp_path / "bomb.tar.gz", [("zeros.bin", bytes(48 << 20)), ("after.txt", b"never reached\n")])
    assert (tmp_path / "bomb.tar.gz").stat().st_size < 200_000
    with pytest.raises(TooLarge, match="expands past the load cap"):
        await load_path("bomb.tar.gz", LoadLimits(roots=[tmp_path], max_bytes=4 << 20))


async def test_binary_members_are_skipped_without_being_read(tmp_path: Path):
    make_zip(tmp_path / "media.zip", [("movie.bin", bytes(48 << 20)), ("notes.txt", b"notes\n")])
    src = await load_path("media.zip", LoadLimits(roots=[tmp_path], max_bytes=4 << 20))
    assert src.text == "==> media.zip/notes.txt <==\nnotes\n"
    assert src.skipped == [{"path": "media.zip/movie.bin", "reason": "binary"}]


async def test_archive_members_count_against_max_files(tmp_path: Path):
    make_zip(tmp_path / "many.zip", [(f"f{i}.txt", b"x\n") for i in range(10)])
    with pytest.raises(TooLarge, match="--max-files"):
        await load_path("many.zip", LoadLimits(roots=[tmp_path], max_files=5))


async def test_broken_and_encrypted_archives_are_reported(tmp_path: Path):
    (tmp_path / "torn.zip").write_bytes(b"PK\x03\x04 torn")
    (tmp_path / "torn.tar.gz").write_bytes(gzip.compress(b"not a tar at all" * 100))
    with pytest.raises(SourceError, match="broken zip"):
        await load_path("torn.zip", LoadLimits(roots=[tmp_path]))
    with pytest.raises(SourceError, match="broken tar"):
        await load_path("torn.tar.gz", LoadLimits(roots=[tmp_path]))
    # zipfile cannot write encrypted members: set the flag a password-protected member carries.
    data = bytearray((make_zip(tmp_path / "x.zip", [("secret.txt", b"secret\n")])).read_bytes())
    for sig in (b"PK\x03\x04", b"PK\x01\x02"):
        at = data.index(sig) + (6 if sig == b"PK\x03\x04" else 8)
        data[at] |= 0x1
    (tmp_path / "locked.zip").write_bytes(bytes(data))
    (tmp_path / "x.zip").unlink()
    (tmp_path / "notes.txt").write_text("notes\n")
    src = await load_path(str(tmp_path), LoadLimits(roots=[tmp_path]))
    reasons = {s["path"]: s["reason"] for s in src.skipped}
    assert reasons["locked.zip/secret.txt"] == "encrypted"
    assert reasons["torn.zip"].startswith("broken zip") and reasons["torn.tar.gz"].startswith("broken tar")


async def test_archives_through_the_load_context_tool(make_client, tmp_path: Path, bundles):
    async with make_client("legacy") as client:
        summary = await call(client, "load_context", path="bundles/papers.zip")
        assert summary["paths"][:2] == ["bundles/papers.zip/readme.txt", "bundles/papers.zip/docs/paper.pdf"]
        assert summary["converters"]["bundles/papers.zip/docs/paper.pdf"] == "pdf"
        assert {"path": "bundles/papers.zip/link.txt", "reason": "symlink, not followed"} in summary["skipped"]
        seen = await call(client, "exec_python", code=(
            "import re\nprint(re.findall(r'==> (.*?) <==', context))"))
        assert seen["stdout"] == ("['bundles/papers.zip/readme.txt', 'bundles/papers.zip/docs/paper.pdf', "
                                  "'bundles/papers.zip/docs/memo.docx', 'bundles/papers.zip/page.html']\n")
