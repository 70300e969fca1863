"""Resumable download, checksum and safe extraction, against a local HTTP server (no network)."""

from __future__ import annotations

import hashlib
import io
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from benchmark.datasets.base import Dataset, DatasetError, Source
from benchmark.datasets.download import (
    HostUnreachable,
    Pending,
    check_archive,
    download,
    fetch,
    manual_steps,
    safe_extract,
)

PAYLOAD = bytes(range(256)) * 400  # 102,400 bytes
SHA = hashlib.sha256(PAYLOAD).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    """Serves ``server.files``; honours ``Range: bytes=N-`` unless ``server.ranges`` is False."""

    def do_GET(self):  # noqa: N802 (http.server's naming)
        body = self.server.files.get(self.path.lstrip("/"))
        self.server.requests.append((self.path, self.headers.get("Range")))
        if body is None:
            self.send_error(404)
            return
        start = 0
        header = self.headers.get("Range")
        if header and self.server.ranges:
            start = int(header.removeprefix("bytes=").rstrip("-"))
            if start >= len(body):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        self.wfile.write(body[start:])

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.files, httpd.requests, httpd.ranges = {"data.bin": PAYLOAD}, [], True
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def test_download_and_checksum(server, tmp_path):
    dest = download(f"{server.url}/data.bin", tmp_path / "data.bin", SHA, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert not (tmp_path / "data.bin.part").exists()
    # a second call finds the file and only re-checks it
    download(f"{server.url}/data.bin", dest, SHA, progress=False)
    assert len(server.requests) == 1


def test_download_resumes_from_part_file(server, tmp_path):
    (tmp_path / "data.bin.part").write_bytes(PAYLOAD[:40_000])
    dest = download(f"{server.url}/data.bin", tmp_path / "data.bin", SHA, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert server.requests == [("/data.bin", "bytes=40000-")]


def test_download_restarts_when_server_ignores_range(server, tmp_path):
    server.ranges = False
    (tmp_path / "data.bin.part").write_bytes(b"garbage that must not stay")
    dest = download(f"{server.url}/data.bin", tmp_path / "data.bin", SHA, progress=False)
    assert dest.read_bytes() == PAYLOAD


def test_download_with_complete_part_file(server, tmp_path):
    (tmp_path / "data.bin.part").write_bytes(PAYLOAD)  # the server answers 416
    assert download(f"{server.url}/data.bin", tmp_path / "data.bin", SHA,
                    progress=False).read_bytes() == PAYLOAD


def test_checksum_mismatch_keeps_the_file_aside(server, tmp_path):
    wrong = "0" * 64
    with pytest.raises(DatasetError) as caught:
        download(f"{server.url}/data.bin", tmp_path / "data.bin", wrong, progress=False)
    message = str(caught.value)
    assert "data.bin" in message and wrong in message and SHA in message
    assert "\n" not in message and "kept as" in message
    assert not (tmp_path / "data.bin").exists() and not (tmp_path / "data.bin.part").exists()
    assert (tmp_path / "data.bin.sha256-mismatch").read_bytes() == PAYLOAD
    # a user's own copy that fails is kept too, under the next free name
    (tmp_path / "data.bin").write_bytes(b"mine")
    with pytest.raises(DatasetError, match=r"kept as .*data\.bin\.sha256-mismatch\.1"):
        download(f"{server.url}/data.bin", tmp_path / "data.bin", wrong, progress=False)
    assert (tmp_path / "data.bin.sha256-mismatch.1").read_bytes() == b"mine"


@pytest.mark.parametrize("members, placed, message", [
    ({"kadid10k/images": b"not a folder"}, "folder", "is a file but .* exists as a folder"),
    ({"kadid10k/images/I01.png/x": b"x"}, "file", "is a folder but .* exists as a file"),
    ({"kadid10k/images/I01.png": b"other"}, "file", "differs from the existing"),
])
def test_extraction_never_replaces_what_is_there(tmp_path, members, placed, message):
    root = tmp_path / "root"
    images = root / "kadid10k" / "images"
    images.mkdir(parents=True)
    (images / "I01.png").write_bytes(b"user image")
    archive = _zip(tmp_path / "k.zip", {"kadid10k/new.txt": b"n", **members})
    with pytest.raises(DatasetError, match=message):
        safe_extract(archive, root)
    assert (images / "I01.png").read_bytes() == b"user image"
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*")) == [
        "kadid10k", "kadid10k/images", "kadid10k/images/I01.png"]  # nothing else moved in


def test_extraction_merges_folders_and_skips_identical_files(tmp_path):
    root = tmp_path / "root"
    (root / "top").mkdir(parents=True)
    (root / "top" / "a.txt").write_bytes(b"a")
    (root / "top" / "mine.txt").write_bytes(b"mine")
    safe_extract(_zip(tmp_path / "x.zip", {"top/a.txt": b"a", "top/b.txt": b"b"}), root)
    assert {p.name: p.read_bytes() for p in (root / "top").iterdir()} == {
        "a.txt": b"a", "b.txt": b"b", "mine.txt": b"mine"}


def test_unreachable_and_missing_files(server, tmp_path):
    with pytest.raises(HostUnreachable, match="HTTP 404"):
        download(f"{server.url}/nothing.zip", tmp_path / "nothing.zip", progress=False)
    with pytest.raises(HostUnreachable, match="cannot reach"):
        download("http://127.0.0.1:9/x.zip", tmp_path / "sub" / "x.zip", progress=False,
                 timeout=5)
    assert list(tmp_path.iterdir()) == []  # no folder, no .part for a file that never came


def test_file_url(tmp_path):
    source = tmp_path / "src.bin"
    source.write_bytes(PAYLOAD)
    dest = download(source.as_uri(), tmp_path / "out" / "src.bin", SHA, progress=False)
    assert dest.read_bytes() == PAYLOAD


# ------------------------------------------------------------------------------------ extraction


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as handle:
        for name, body in members.items():
            handle.writestr(name, body)
    return path


def _tar(path: Path, members: list[tarfile.TarInfo | tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w:gz") as handle:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                handle.addfile(member)
            else:
                info = tarfile.TarInfo(member[0])
                info.size = len(member[1])
                handle.addfile(info, io.BytesIO(member[1]))
    return path


def _link(name: str, target: str, hard: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.LNKTYPE if hard else tarfile.SYMTYPE
    info.linkname = target
    return info


def test_zip_and_tar_extract(tmp_path):
    members = {"top/a.txt": b"a", "top/sub/b.txt": b"bb"}
    assert safe_extract(_zip(tmp_path / "x.zip", members), tmp_path / "z") == 2
    assert (tmp_path / "z/top/sub/b.txt").read_bytes() == b"bb"
    archive = _tar(tmp_path / "x.tgz", [*members.items(), _link("top/c.txt", "a.txt")])
    assert safe_extract(archive, tmp_path / "t") == 3
    assert (tmp_path / "t/top/c.txt").read_bytes() == b"a"
    assert [p.name for p in (tmp_path / "t").iterdir()] == ["top"]  # no staging left behind


@pytest.mark.parametrize("bad, message", [
    ("../evil.txt", "climbs out"),
    ("top/../../evil.txt", "climbs out"),
    ("/etc/evil.txt", "absolute path"),
])
def test_zip_refuses_unsafe_names_before_writing_anything(tmp_path, bad, message):
    # the unsafe member comes last: nothing before it may be written either
    archive = _zip(tmp_path / "x.zip", {"good.txt": b"ok", bad: b"evil"})
    target = tmp_path / "target"
    with pytest.raises(DatasetError, match=message) as caught:
        safe_extract(archive, target)
    assert "x.zip" in str(caught.value) and "\n" not in str(caught.value)
    assert not target.exists()
    assert not (tmp_path / "evil.txt").exists()


@pytest.mark.parametrize("member, message", [
    (_link("top/out", "../../outside"), "pointing outside"),
    (_link("top/abs", "/etc/passwd"), "absolute path"),
    (_link("top/hard", "../outside", hard=True), "climbs out"),
])
def test_tar_refuses_links_leaving_the_target(tmp_path, member, message):
    archive = _tar(tmp_path / "x.tar.gz", [("top/a.txt", b"a"), member])
    with pytest.raises(DatasetError, match=message):
        safe_extract(archive, tmp_path / "target")
    assert not (tmp_path / "target").exists()


def test_tar_refuses_devices(tmp_path):
    device = tarfile.TarInfo("top/dev")
    device.type = tarfile.CHRTYPE
    with pytest.raises(DatasetError, match="special member"):
        check_archive(_tar(tmp_path / "x.tar.gz", [device]))


def test_password_protected_zip_needs_password(tmp_path):
    # zipfile cannot write encrypted archives: set the encryption flag on a stored member
    archive = _zip(tmp_path / "x.zip", {"a.txt": b"a"})
    raw = bytearray(archive.read_bytes())
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = raw.find(signature)
        raw[at + offset] |= 0x01
    archive.write_bytes(bytes(raw))
    with pytest.raises(DatasetError, match="password"):
        safe_extract(archive, tmp_path / "target")
    assert not any((tmp_path / "target").glob("a.txt"))


def test_rar_and_corrupt_archives_are_refused(tmp_path):
    (tmp_path / "tid2013.rar").write_bytes(b"Rar!\x1a\x07\x00")
    with pytest.raises(DatasetError, match="extract it by hand"):
        safe_extract(tmp_path / "tid2013.rar", tmp_path / "t")
    (tmp_path / "broken.zip").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(DatasetError, match=r"broken\.zip: unreadable archive"):
        safe_extract(tmp_path / "broken.zip", tmp_path / "t")


# ------------------------------------------------------------------------- fetch and manual steps


class _Tiny(Dataset):
    name = "tiny"
    title = "Tiny test set"
    kind = "synthetic"
    score_type = "MOS"
    higher_is_better = True
    score_range = (0.0, 1.0)
    layout = "tiny/\n  labels.txt\n  images/"

    def __init__(self, sources: tuple[Source, ...]) -> None:
        self.sources = sources

    def parse(self, root: Path):
        raise DatasetError("tiny: label file labels.txt not found")


def test_fetch_downloads_checks_and_unpacks_once(server, tmp_path):
    archive = _zip(tmp_path / "tiny.zip", {"tiny/labels.txt": b"a 1\n"})
    body = archive.read_bytes()
    server.files["tiny.zip"] = body
    dataset = _Tiny((Source("archive", f"{server.url}/tiny.zip", "direct", "tiny.zip",
                            hashlib.sha256(body).hexdigest()),
                     Source("mirror", f"{server.url}/never.zip", "mirror", "never.zip")))
    root = tmp_path / "root"
    result = fetch(dataset, root, progress=False)
    assert result.pending == [] and result.extracted == [root / "tiny.zip"]
    assert (root / "tiny/labels.txt").read_bytes() == b"a 1\n"
    again = fetch(dataset, root, progress=False)
    assert again.extracted == [] and len(server.requests) == 1  # neither fetched nor unpacked twice


def test_fetch_reports_manual_and_unreachable_sources(server, tmp_path):
    manual = Source("form", "https://example.org/form", "manual", "secret.zip",
                    note="password after the form")
    gone = Source("gone", f"{server.url}/gone.zip", "direct", "gone.zip")
    result = fetch(_Tiny((manual, gone)), tmp_path, progress=False)
    assert [p.source.filename for p in result.pending] == ["secret.zip", "gone.zip"]
    assert "HTTP 404" in result.pending[1].reason
    steps = manual_steps(_Tiny((manual, gone)), tmp_path, result.pending)
    assert "https://example.org/form" in steps and "password after the form" in steps
    assert f"put it at {tmp_path / 'secret.zip'}" in steps
    assert f"put it at {tmp_path / 'gone.zip'}" in steps
    assert "\n    tiny/\n      labels.txt\n      images/\n" in steps  # the layout, indented
    assert "bench data verify tiny" in steps


def test_manual_steps_for_real_declarations(tmp_path):
    from benchmark.datasets.live import Live
    from benchmark.datasets.tid2013 import Tid2013

    live = manual_steps(Live(), tmp_path)
    assert "databaserelease2.zip" in live and "dmos_realigned.mat" in live
    assert "--password" in live and "live.tgz" in live  # mirror listed, for information
    assert f"put it at {tmp_path / 'databaserelease2.zip'}" in live
    tid = manual_steps(Tid2013(), tmp_path, [Pending(Tid2013.sources[0], "cannot reach host")])
    assert "http://www.ponomarenko.info/tid2013/tid2013.rar" in tid and "mos_with_names.txt" in tid
