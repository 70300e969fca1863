"""Fetch a dataset's files, check them, unpack them safely, or say exactly what a human must do.

Downloads resume from a ``.part`` file with HTTP Range requests and are renamed into place
only when complete; a known sha256 is checked and a mismatching file is renamed aside (never
deleted: it may be the user's). Archives are checked member by member before anything is
written (no absolute paths, no ``..``, no links leaving the target, no devices), unpacked into
a temporary folder inside the target and then moved into place, so a refused or broken archive
leaves nothing behind. Unpacking never deletes or overwrites what is already there: a member
that collides with an existing path of another kind, or a file with other content, refuses
the whole archive.
"""

from __future__ import annotations

import filecmp
import os
import posixpath
import re
import shutil
import stat
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from benchmark.datasets.base import Dataset, DatasetError, Source
from benchmark.files import rename, sha256_file

__all__ = [
    "DownloadError",
    "HostUnreachable",
    "Pending",
    "FetchResult",
    "download",
    "verify_sha256",
    "is_archive",
    "check_archive",
    "safe_extract",
    "manual_steps",
    "fetch",
]

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
UNSUPPORTED_SUFFIXES = (".rar", ".7z")


class DownloadError(DatasetError):
    """A download that failed or came back incomplete."""


class HostUnreachable(DownloadError):
    """The host did not answer (no network, DNS failure, refused, HTTP error)."""


def verify_sha256(path: Path, expected: str) -> None:
    """Raise when the sha256 of ``path`` differs from ``expected``, first renaming the file
    aside (kept for the user to inspect; a rerun then fetches or asks for a fresh copy)."""
    actual = sha256_file(path)
    if actual != expected.lower():
        aside = _free_name(path.with_name(path.name + ".sha256-mismatch"))
        rename(path, aside)
        raise DatasetError(
            f"{path}: sha256 mismatch, expected {expected.lower()}, got {actual} "
            f"(file kept as {aside})"
        )


def _free_name(path: Path) -> Path:
    """``path``, or ``path.1``, ``path.2``…: the first name not taken."""
    candidate, number = path, 0
    while candidate.exists() or candidate.is_symlink():
        number += 1
        candidate = path.with_name(f"{path.name}.{number}")
    return candidate


def _content_range_start(header: str | None) -> int | None:
    match = re.match(r"bytes (\d+)-", header or "")
    return int(match.group(1)) if match else None


def download(url: str, dest: Path, sha256: str | None = None, progress: bool = True,
             timeout: float = 60.0, chunk: int = 1 << 20) -> Path:
    """Fetch ``url`` to ``dest``, resuming a previous ``dest.part``; verify ``sha256`` if given."""
    dest = Path(dest)
    if dest.is_file():
        if sha256:
            verify_sha256(dest, sha256)
        return dest
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.is_file() else 0
    headers = {"User-Agent": "iqa-bench"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                          timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416 and offset:  # nothing left to send: the .part is already whole
            return _finish(part, dest, sha256)
        raise HostUnreachable(f"{url}: HTTP {error.code} {error.reason}") from None
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        raise HostUnreachable(f"cannot reach {url} ({reason})") from None
    with response:
        status = getattr(response, "status", None)
        if offset and status == 206:
            start = _content_range_start(response.headers.get("Content-Range"))
            if start != offset:
                raise DownloadError(f"{url}: server resumed at byte {start}, not {offset}")
        elif offset:  # the server ignored Range (or file://): start over
            offset = 0
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length and length.isdigit() else None
        dest.parent.mkdir(parents=True, exist_ok=True)  # only once the host has answered
        with open(part, "ab" if offset else "wb") as handle, tqdm(
            total=total, initial=offset, unit="B", unit_scale=True, desc=dest.name,
            disable=not progress, leave=False,
        ) as bar:
            try:
                while block := response.read(chunk):
                    handle.write(block)
                    bar.update(len(block))
            except OSError as error:
                raise DownloadError(
                    f"{url}: connection lost after {handle.tell()} bytes ({error}); "
                    f"run again to resume from {part}"
                ) from None
    size = part.stat().st_size
    if total is not None and size != total:
        raise DownloadError(f"{url}: got {size} of {total} bytes; run again to resume from {part}")
    return _finish(part, dest, sha256)


def _finish(part: Path, dest: Path, sha256: str | None) -> Path:
    rename(part, dest)
    if sha256:
        verify_sha256(dest, sha256)
    return dest


def is_archive(path: Path) -> bool:
    name = Path(path).name.lower()
    return name.endswith((".zip", *TAR_SUFFIXES, *UNSUPPORTED_SUFFIXES))


def _check_name(archive: Path, name: str) -> None:
    posix = name.replace("\\", "/")
    if posix.startswith("/") or re.match(r"^[A-Za-z]:", posix):
        raise DatasetError(f"{archive}: refusing member {name!r} with an absolute path")
    if ".." in PurePosixPath(posix).parts:
        raise DatasetError(f"{archive}: refusing member {name!r} that climbs out with '..'")


def _check_link(archive: Path, name: str, target: str) -> None:
    if target.startswith("/") or re.match(r"^[A-Za-z]:", target):
        raise DatasetError(f"{archive}: refusing link {name!r} to absolute path {target!r}")
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
    if resolved == ".." or resolved.startswith("../"):
        raise DatasetError(f"{archive}: refusing link {name!r} pointing outside to {target!r}")


def _archive_format(archive: Path) -> str:
    name = archive.name.lower()
    if name.endswith(UNSUPPORTED_SUFFIXES):
        raise DatasetError(
            f"{archive}: the Python standard library cannot unpack {Path(name).suffix} archives; "
            f"extract it by hand (unrar x / 7z x / bsdtar -xf) into {archive.parent}"
        )
    if name.endswith(".zip"):
        return "zip"
    if name.endswith(TAR_SUFFIXES):
        return "tar"
    raise DatasetError(f"{archive}: not an archive this harness unpacks (zip or tar)")


def check_archive(archive: Path, password: bytes | None = None) -> int:
    """Check every member; return their number. Raises on the first unsafe or unreadable one."""
    archive = Path(archive)
    try:
        if _archive_format(archive) == "zip":
            with zipfile.ZipFile(archive) as handle:
                members = handle.infolist()
                for info in members:
                    _check_name(archive, info.filename)
                    if stat.S_ISLNK(info.external_attr >> 16):
                        _check_link(archive, info.filename,
                                    handle.read(info, pwd=password).decode("utf-8", "replace"))
                return len(members)
        with tarfile.open(archive) as handle:
            members = handle.getmembers()
            for member in members:
                _check_name(archive, member.name)
                if member.issym():
                    _check_link(archive, member.name, member.linkname)
                elif member.islnk():  # hard-link targets are archive paths, not relative ones
                    _check_name(archive, member.linkname)
                elif not (member.isfile() or member.isdir()):
                    raise DatasetError(f"{archive}: refusing special member {member.name!r}")
            return len(members)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as error:
        raise DatasetError(f"{archive}: unreadable archive ({error})") from None
    except RuntimeError as error:  # zipfile: encrypted member and no (or a wrong) password
        raise DatasetError(f"{archive}: {error} (pass --password)") from None
    except NotImplementedError as error:  # AES encryption or an exotic compression method
        raise DatasetError(f"{archive}: {error}; unpack it by hand into {archive.parent}") from None


def _kind(path: Path) -> str:
    if path.is_symlink():
        return "link"
    return "folder" if path.is_dir() else "file"


def _collision(archive: Path, source: Path, target: Path, staging: Path) -> None:
    """Refuse the archive when a member would replace something already under ``target``:
    a path of another kind, or a file (or link) with other content. A folder member merges
    into an existing folder (or a link to one: data roots often link to their storage)."""
    for child in sorted(source.iterdir()):
        destination = target / child.name
        if not (destination.exists() or destination.is_symlink()):
            continue
        member = child.relative_to(staging).as_posix()
        if _kind(child) == "folder" and destination.is_dir():
            _collision(archive, child, destination, staging)
        elif _kind(child) != _kind(destination):
            raise DatasetError(f"{archive}: member {member!r} is a {_kind(child)} but "
                               f"{destination} exists as a {_kind(destination)}; refusing to "
                               f"replace it (move it aside and rerun)")
        elif not _same(child, destination):
            raise DatasetError(f"{archive}: member {member!r} differs from the existing "
                               f"{destination}; refusing to overwrite it (move it aside and "
                               f"rerun)")


def _same(a: Path, b: Path) -> bool:
    if a.is_symlink():
        return os.readlink(a) == os.readlink(b)
    return filecmp.cmp(a, b, shallow=False)


def _merge(source: Path, target: Path) -> None:
    """Move the tree ``source`` into ``target``; :func:`_collision` has checked that what
    exists there already is either a folder to merge into or identical content."""
    target.mkdir(parents=True, exist_ok=True)
    for child in source.iterdir():
        destination = target / child.name
        if _kind(child) == "folder" and destination.is_dir():
            _merge(child, destination)
        elif not (destination.exists() or destination.is_symlink()):
            rename(child, destination)


def safe_extract(archive: Path, target: Path, password: bytes | None = None) -> int:
    """Check all members, unpack into a temporary folder inside ``target``, then move them in."""
    archive, target = Path(archive), Path(target)
    count = check_archive(archive, password)
    target.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{archive.name}.", dir=target))
    try:
        try:
            if _archive_format(archive) == "zip":
                with zipfile.ZipFile(archive) as handle:
                    handle.extractall(staging, pwd=password)
            else:
                with tarfile.open(archive) as handle:
                    handle.extractall(staging, filter="data")  # second guard behind the checks
        except RuntimeError as error:
            raise DatasetError(f"{archive}: {error} (pass --password)") from None
        except NotImplementedError as error:
            raise DatasetError(f"{archive}: {error}; unpack it by hand into {target}") from None
        except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as error:
            raise DatasetError(f"{archive}: cannot unpack ({error})") from None
        _collision(archive, staging, target, staging)
        _merge(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return count


@dataclass(frozen=True)
class Pending:
    """A source the user must still provide, and why."""

    source: Source
    reason: str


@dataclass
class FetchResult:
    present: list[Path] = field(default_factory=list)  # files in place (and checked)
    extracted: list[Path] = field(default_factory=list)
    pending: list[Pending] = field(default_factory=list)
    already_complete: bool = False


def _filename(source: Source) -> str:
    return source.filename or posixpath.basename(source.url.split("?")[0])


def _marker(root: Path, archive: Path) -> Path:
    return root / f".{archive.name}.extracted"


def _complete(dataset: Dataset, root: Path) -> bool:
    """The labels parse and every listed image is present: nothing to fetch."""
    try:
        table = dataset.parse(root)
    except DatasetError:
        return False
    return all((root / image).is_file() for image in table["image"])


def fetch(dataset: Dataset, root: Path, password: bytes | None = None,
          progress: bool = True) -> FetchResult:
    """Download direct sources, check and unpack whatever is in place; report what is pending.

    Mirrors are never fetched; manual sources and unreachable hosts end up in ``pending``
    (see :func:`manual_steps`). An archive is unpacked once (a marker records it).
    """
    root = Path(root)
    result = FetchResult()
    if _complete(dataset, root):
        result.already_complete = True
        return result
    for source in dataset.sources:
        if source.access == "mirror":
            continue
        path = root / _filename(source)
        if path.is_file():
            if source.sha256:
                verify_sha256(path, source.sha256)
        elif source.access == "direct":
            try:
                download(source.url, path, source.sha256, progress=progress)
            except HostUnreachable as error:
                result.pending.append(Pending(source, str(error)))
                continue
        elif not source.filename and any(s.access == "direct" for s in dataset.sources):
            continue  # an information page beside direct files: nothing to place by hand
        else:
            result.pending.append(Pending(source, "needs to be placed by hand"))
            continue
        result.present.append(path)
        if not is_archive(path) or _marker(root, path).is_file():
            continue
        try:
            safe_extract(path, root, password)
        except DatasetError as error:
            if not path.name.lower().endswith(UNSUPPORTED_SUFFIXES):
                raise
            result.pending.append(Pending(source, str(error)))
            continue
        _marker(root, path).write_text(sha256_file(path) + "\n")
        result.extracted.append(path)
    return result


def manual_steps(dataset: Dataset, root: Path, pending: list[Pending] | None = None) -> str:
    """What to get from where and where to put it, for manual sources or unreachable hosts."""
    root = Path(root)
    if pending is None:
        pending = [Pending(s, "needs to be placed by hand") for s in dataset.sources
                   if s.access != "mirror"]
    title = dataset.title or dataset.name
    lines = [f"{title} ({dataset.name}): files to place by hand under {root}"]
    for number, item in enumerate(pending, 1):
        source = item.source
        lines.append(f"  {number}. {_filename(source)} ({source.name}): {item.reason}")
        lines.append(f"     get it from {source.url}")
        if source.note:
            lines.append(f"     note: {source.note}")
        lines.append(f"     put it at {root / _filename(source)}")
        if source.size_bytes:
            lines.append(f"     size about {source.size_bytes:,} bytes")
        if source.sha256:
            lines.append(f"     expected sha256 {source.sha256}")
    lines += [
        f"Then run `bench data download {dataset.name} --root {root}` again to check and unpack "
        "the archives (--password for a protected zip; it is never stored),",
        f"or unpack them yourself so that {root} holds:",
        *("    " + line for line in dataset.layout.splitlines()),
    ]
    mirrors = [s for s in dataset.sources if s.access == "mirror"]
    if mirrors:
        lines.append("Known third-party copies (not fetched automatically; check their terms):")
        lines += [f"  - {_filename(s)} at {s.url}: {s.note}" for s in mirrors]
    lines.append(f"Check the result with `bench data verify {dataset.name} --root {root}`.")
    return "\n".join(lines)
