"""Failures that are one clean line (issue 11, cases 4 and 5): Ctrl-C while tuning, a full disk during
--bundle, bad weights files, damaged tuning records, and what killed builds leave behind."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import torch

from mnet_compile import runtime, staging
from mnet_compile.cli import main
from mnet_compile.workdir import repair_database


def run_cli(capsys, *args):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_line(err: str) -> bool:
    """One error line, the last one (progress lines before it are fine)."""
    lines = err.strip().splitlines()
    return bool(lines) and sum(line.startswith(("error:", "internal error:")) for line in lines) == 1 and lines[-1].startswith("error: ")


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


SMALL = ["--alpha", "0.25", "--resolution", "32"]


# ------------------------------------------------------------------------------------- weights files


def test_empty_and_malicious_weights_files(capsys, tmp_path):
    """An empty file gave `internal error: IndexError`; a pickle that runs code got torch's advice to retry
    with weights_only=False. Both are now one line that says what is wrong, and nothing runs."""
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "evil.pt"
    torch.save({"features.0.weight": Evil()}, evil)
    for path, message in [(empty, "empty or truncated file"), (evil, "holds Python objects besides tensors (posix.system)")]:
        out = tmp_path / "out"
        code, _, err = run_cli(capsys, *SMALL, "--weights", path, "--output", out)
        assert code == 1 and message in err and one_line(err), err
        assert "weights_only=False" not in err and "weights_only` set to `False" not in err
        assert not out.exists() and not marker.exists()


# ------------------------------------------------------------------------ full disk, failed --bundle


def test_failed_bundle_leaves_nothing_new(capsys, tmp_path, monkeypatch):
    """A full disk while writing --bundle gave `internal error: OSError: [Errno 28]` and left the artifact,
    so a rerun without --force refused. Now: one line, no bundle, no new artifact, the old one untouched."""

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(tarfile.TarFile, "addfile", full_disk)
    out = tmp_path / "m"
    code, _, err = run_cli(capsys, *SMALL, "--bundle", "--output", out)
    assert code == 1 and one_line(err) and "cannot write the device bundle" in err and "No space left" in err, err
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


def test_really_full_disk_during_bundle(capsys, compiled, tmp_path):
    """The same on a real full file system: a tmpfs that holds the artifact but not the bundle too."""
    so_size = (compiled(0.25, 32) / "model.so").stat().st_size
    disk = tmp_path / "disk"
    if shutil.which("mount") is None or not _mount_tmpfs(disk, so_size + 96 * 1024):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        out = disk / "m"
        code, _, err = run_cli(capsys, *SMALL, "--bundle", "--output", out)
        assert code == 1 and one_line(err) and "No space left on device" in err, err
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


# --------------------------------------------------------------------------------- tuning records


def test_damaged_records_are_reported_and_renumbered(tmp_path):
    """A corrupted line in a tuning work folder was dropped without a word: now reported, kept aside, and
    the records of later workloads keep pointing at their own workload."""
    workloads = ['["h0", "mod0"]\n', "{damaged\n", '["h2", "mod2"]\n']
    records = ['[0, ["t0", [1.0], {}, []]]\n', '[1, ["t1", [1.0], {}, []]]\n', '[2, ["t2", [1.0], {}, []]]\n',
               "not json\n", '[0, ["cut short"']
    (tmp_path / "database_workload.json").write_text("".join(workloads))
    (tmp_path / "database_tuning_record.json").write_text("".join(records))
    messages = repair_database(str(tmp_path))
    assert len(messages) == 2
    assert "database_workload.json: dropped 1 damaged line (line 2: not a record)" in messages[0]
    assert "dropped 3 damaged lines (line 2, 4, 5: 1 of them records of a dropped workload)" in messages[1]
    assert (tmp_path / "database_workload.json").read_text() == workloads[0] + workloads[2]
    kept = [json.loads(line) for line in (tmp_path / "database_tuning_record.json").read_text().splitlines()]
    assert kept == [[0, ["t0", [1.0], {}, []]], [1, ["t2", [1.0], {}, []]]]
    assert "{damaged" in (tmp_path / "database_workload.json.damaged").read_text()
    assert repair_database(str(tmp_path)) == []  # repaired: nothing more to say
    (tmp_path / "database_tuning_record.json").write_text('[0, ["t0", [1.0], {}, []]]\n[0, ["cut')
    assert "line 2: a write cut short by an interruption" in repair_database(str(tmp_path))[0]


def _records(work: Path) -> list:
    path = work / "database_tuning_record.json"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip().endswith("]")]


def test_ctrl_c_during_tuning_exits_130_with_records_and_resume_command(capsys, tmp_path):
    """Ctrl-C while tuning ended in a segfault or `internal error: RuntimeError:`. Now the first Ctrl-C stops
    at the next candidate: exit 130, records kept (no half-measured ones recorded as failures), one line
    that says how to resume; and the printed command resumes."""
    work = tmp_path / "work"
    cmd = [sys.executable, "-m", "mnet_compile.cli", "tune", *SMALL, "--trials", "200", "--work-dir", str(work)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.time() + 600
        while not _records(work) and proc.poll() is None and time.time() < deadline:
            time.sleep(0.5)
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err and "Segfault" not in err and "internal error" not in err, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"interrupted: the records measured so far are kept in {work}; resume with: mnet-compile tune ")
    kept = _records(work)
    assert kept and all(float(r[1][1][0]) < 1e9 for r in kept), "an interrupted candidate was recorded as a failure"
    # the printed command resumes (with a budget already spent it only reads the records); a damaged line
    # appended meanwhile is reported, not silently dropped
    with open(work / "database_tuning_record.json", "a") as f:
        f.write('[0, ["cut short')
    args = shlex.split(last.split("resume with: ")[1])[1:]
    args[args.index("--trials") + 1] = str(len(kept))
    code, out, err = run_cli(capsys, *args)
    assert code == 0 and out.strip() == str(work), err
    assert re.search(r"warning: .*database_tuning_record.json: dropped 1 damaged line .*cut short by an interruption", err)
    assert len(_records(work)) == len(kept)


# ------------------------------------------------------------------------------------ model files


def test_damaged_onnx_graph_is_named(capsys, tmp_path):
    """A flipped byte in a tensor name gave `cannot import: '<name>'` (the frontend's KeyError) followed by
    TVM's BlockBuilder warning; now one line that says what is damaged."""
    import onnx

    from mnet_compile.model import build_model
    from mnet_compile.peer_models import write_onnx

    path = tmp_path / "v1.onnx"
    write_onnx(build_model(0.25, seed=1), (1, 3, 32, 32), path)
    model = onnx.load(str(path))
    node = model.graph.node[3]
    node.input[0] = node.input[0] + "x"
    onnx.save(model, str(path))
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, "--from", path, "--output", out)
    assert code == 1 and one_line(err) and "damaged ONNX graph: node" in err and "which nothing produces" in err, err
    assert "Warning" not in err and not out.exists()
