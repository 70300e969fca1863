"""benchmark.files: files honour the umask, a full disk names the file, a lock names its holder."""

from __future__ import annotations

import errno
import os
import stat

import pytest

import benchmark.files
from benchmark.files import (DiskFullError, LockedError, atomic_dir, atomic_write_text,
                             exclusive_lock)


@pytest.mark.parametrize("umask, file_mode, dir_mode", [(0o022, 0o644, 0o755),
                                                        (0o002, 0o664, 0o775),
                                                        (0o077, 0o600, 0o700)])
def test_outputs_get_the_mode_the_umask_allows(tmp_path, umask, file_mode, dir_mode):
    previous = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "a.csv", "x\n")
        with atomic_dir(tmp_path / "run") as folder:
            (folder / "b.txt").write_text("y")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "a.csv").stat().st_mode) == file_mode
    assert stat.S_IMODE((tmp_path / "run").stat().st_mode) == dir_mode


def test_a_full_disk_names_the_file_and_keeps_the_old_content(tmp_path, monkeypatch):
    target = tmp_path / "record.json"
    target.write_text("old")

    class Full:
        def __getattr__(self, name):
            return getattr(os, name)

        def fsync(self, fd):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(benchmark.files, "os", Full())
    with pytest.raises(DiskFullError, match=f"no space left on device writing {target}"):
        atomic_write_text(target, "new")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["record.json"]


def test_a_lock_names_its_holder_and_frees_on_release(tmp_path):
    path = tmp_path / "runs" / ".split0.lock"
    with exclusive_lock(path, "run folder split0"):
        assert path.read_text() == f"{os.getpid()}\n"
        with pytest.raises(LockedError, match=f"run folder split0 is in use by process "
                                              f"{os.getpid()}"):
            with exclusive_lock(path, "run folder split0"):
                pass
    assert not path.exists()
    with exclusive_lock(path, "run folder split0"):  # free again
        pass


def test_a_run_record_is_written_whole_or_not_at_all(tmp_path):
    from benchmark.records import RECORD_SCHEMA, RecordError, RunRecord, load_record, write_record

    keys = list(RunRecord.__annotations__)
    record = {key: None for key in keys}
    record.update(schema=RECORD_SCHEMA, model="probe", dataset="demo", split=0, config={},
                  config_hash="0" * 64, metrics={"val": {"epoch": 1, "test": {"srcc": 0.5}}})
    del record["timings"]
    with pytest.raises(RecordError, match="timings"):
        write_record(tmp_path, record)
    assert not (tmp_path / "record.json").exists()
    record["timings"] = {}
    assert load_record(write_record(tmp_path, record))["metrics"] == record["metrics"]
