"""Writing the artifact: a failed --bundle or a full disk leaves nothing new behind; leftovers of killed
builds are removed (never the folder of a build still running), a killed swap restores the old artifact."""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from mnet_compile.export import staging

from ..helpers import error_line, run_cli

SMALL = ["--alpha", "0.25", "--resolution", "32"]


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_failed_bundle_leaves_nothing_new(capsys, tmp_path, monkeypatch):
    """A full disk while writing --bundle gave `internal error: OSError: [Errno 28]` and left the artifact,
    so a rerun without --force refused. Now: one line, no bundle, no new artifact, the old one untouched."""

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(tarfile.TarFile, "addfile", full_disk)
    out = tmp_path / "m"
    code, _, err = run_cli(capsys, *SMALL, "--bundle", "--output", out)
    assert code == 1 and error_line(err) and "cannot write the device bundle" in err and "No space left" in err, err
    assert list(tmp_path.iterdir()) == [], "artifact, bundle or temporary files left behind"
    monkeypatch.undo()
    code, _, err = run_cli(capsys, *SMALL, "--output", out)  # the rerun needs no --force
    assert code == 0, err
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    monkeypatch.setattr(tarfile.TarFile, "addfile", full_disk)
    code, _, err = run_cli(capsys, *SMALL, "--seed", "5", "--bundle", "--force", "--output", out)
    assert code == 1 and "No space left" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before, "the old artifact was changed"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def _mount_tmpfs(path: Path, size: int) -> bool:
    path.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    return proc.returncode == 0


@pytest.mark.slow
def test_really_full_disk_during_bundle(capsys, compiled, tmp_path):
    """The same on a real full file system: a tmpfs that holds the artifact but not the bundle too."""
    so_size = (compiled(0.25, 32) / "model.so").stat().st_size
    disk = tmp_path / "disk"
    if shutil.which("mount") is None or not _mount_tmpfs(disk, so_size + 96 * 1024):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        out = disk / "m"
        code, _, err = run_cli(capsys, *SMALL, "--bundle", "--output", out)
        assert code == 1 and error_line(err) and "No space left on device" in err, err
        assert list(disk.iterdir()) == []
    finally:
        subprocess.run(["umount", str(disk)], check=False)


# ----------------------------------------------------------------------- leftovers of killed builds


def test_stale_folders_of_killed_builds_are_removed(capsys, tmp_path):
    """Hidden `.<name>.*` folders left by a killed build were never cleaned; the next build removes them,
    but never the folder of a build still running (it holds the lock)."""
    out = tmp_path / "m"
    dead = tmp_path / ".m.tmp-deadbeef"
    dead.mkdir()
    (dead / staging.LOCK).touch()
    (dead / "model.so").write_bytes(b"half")
    legacy = tmp_path / ".m.k3j4h5g6"  # an earlier version's mkdtemp name: no lock, removed once old
    legacy.mkdir()
    old_time = time.time() - 2 * staging.STALE_SECONDS
    os.utime(legacy, (old_time, old_time))
    young_legacy = tmp_path / ".m.a1b2c3d4"
    young_legacy.mkdir()
    backup = tmp_path / f".m.old-{dead_pid()}"
    backup.mkdir()
    live = tmp_path / ".m.tmp-running1"
    live.mkdir()
    fd = os.open(live / staging.LOCK, os.O_CREAT | os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    other = tmp_path / ".other.tmp-x"
    other.mkdir()
    try:
        out.mkdir()  # an artifact exists: the backup of a killed --force build is garbage
        code, _, err = run_cli(capsys, *SMALL, "--output", out, "--force")
        assert code == 0, err
        assert "removed .m.tmp-deadbeef, left by a killed build" in err
        left = sorted(p.name for p in tmp_path.iterdir())
        assert left == sorted([".m.a1b2c3d4", ".m.tmp-running1", ".other.tmp-x", "m"]), left
        assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.so"]  # no lock file inside
    finally:
        os.close(fd)
    assert staging.clean_stale(out) == [live]  # its owner is gone now


def test_killed_swap_restores_the_old_artifact(tmp_path):
    """A build killed between moving the old artifact aside and moving the new one in: restored."""
    out = tmp_path / "m"
    backup = tmp_path / f".m.old-{dead_pid()}"
    backup.mkdir()
    (backup / "manifest.json").write_text("{}")
    assert staging.clean_stale(out) == [out]
    assert (out / "manifest.json").read_text() == "{}" and not backup.exists()
