"""Ctrl-C while tuning: exit 130 at a safe point, records kept, one line with the command that resumes."""

from __future__ import annotations

import json
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ..helpers import run_cli

SMALL = ["--alpha", "0.25", "--resolution", "32"]


def _records(work: Path) -> list:
    path = work / "database_tuning_record.json"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip().endswith("]")]


@pytest.mark.slow
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
    # the printed command resumes (with a budget already spent it starts no search); a damaged line
    # appended meanwhile is reported, not silently dropped
    with open(work / "database_tuning_record.json", "a") as f:
        f.write('[0, ["cut short')
    args = shlex.split(last.split("resume with: ")[1])[1:]
    args[args.index("--trials") + 1] = str(len(kept))
    code, out, err = run_cli(capsys, *args)
    assert code == 0 and out.strip() == str(work), err
    assert re.search(r"warning: .*database_tuning_record.json: dropped 1 damaged line .*cut short by an interruption", err)
    # the records kept are all still there; the resumed run may add the default-schedule seeds of tasks
    # that the interruption left unseeded (tuning.seed_defaults), but starts no search
    assert _records(work)[: len(kept)] == kept
