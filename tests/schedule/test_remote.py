"""`mnet-compile tune --rpc HOST:PORT --key KEY`: tuning through TVM's RPC tracker and server, on loopback.

A tracker and an x86 RPC server (key "x86-local") run as subprocesses on free ports for this module; the
candidates are built here with the preset's compiler and timed by the server. The tracker needs tornado
(pip install tornado, or apache-tvm[rpc]): without it each test that needs a tracker skips, the others run.
The slow test runs the server in an emulated AArch64 CPython (tests/emulation.py: debootstrap,
qemu-aarch64-static) and tunes the arm_cpu preset through it. Nothing here asserts how long anything took.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from mnet_compile.cli import main
from mnet_compile.errors import MnetError
from mnet_compile.schedule import remote

from ..helpers import error_line

TINY = ["--alpha", "0.25", "--resolution", "32"]
KEY = "x86-local"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd, log: Path, env=None) -> subprocess.Popen:
    """A subprocess in its own process group (the RPC server forks a listener and one child per session)."""
    proc = subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env, start_new_session=True)
    proc.log = log
    return proc


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=30)


def start_tracker(log_dir: Path) -> tuple[subprocess.Popen, int]:
    pytest.importorskip("tornado", reason="the RPC tracker needs tornado (pip install tornado)")
    port = free_port()
    cmd = [sys.executable, "-m", "tvm.exec.rpc_tracker", "--host", "127.0.0.1", "--port", str(port), "--port-end", str(port + 1)]
    return start(cmd, log_dir / "tracker.log", env=dict(os.environ, TVM_USE_RUNTIME_LIB="1")), port  # no compiler needed


def server_command(python: list[str], tracker_port: int, key: str) -> list[str]:
    port = free_port()
    return python + [
        "-m", "tvm.exec.rpc_server", "--host", "127.0.0.1", "--port", str(port), "--port-end", str(port + 1),
        "--tracker", f"127.0.0.1:{tracker_port}", "--key", key,
    ]  # fmt: skip


def wait_for_key(port: int, key: str, procs, timeout: float) -> None:
    """Until a server of `key` is registered with the tracker on `port` (or a process died)."""
    config = remote.RemoteConfig("127.0.0.1", port, key, connect_timeout=2)
    deadline = time.time() + timeout
    while time.time() < deadline:
        for proc in procs:
            assert proc.poll() is None, f"{proc.args[:4]} exited with {proc.returncode}: {proc.log.read_text()[-2000:]}"
        try:
            with remote.Tracker(config) as tracker:
                if tracker.server_keys().get(key):
                    return
        except MnetError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"no server with key {key} registered within {timeout} s")


@pytest.fixture(scope="module")
def rpc(tmp_path_factory):
    """HOST:PORT of a loopback tracker with one x86 RPC server of key x86-local."""
    logs = tmp_path_factory.mktemp("rpc-logs")
    tracker, port = start_tracker(logs)
    server = start(server_command([sys.executable], port, KEY), logs / "server.log")
    try:
        wait_for_key(port, KEY, [tracker, server], timeout=120)
        yield f"127.0.0.1:{port}"
    finally:
        stop(server)
        stop(tracker)


def records(work: Path) -> list[dict]:
    path = work / "database_tuning_record.json"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def tune_args(work, rpc_addr, key=KEY, trials=3, target="x86"):
    return ["tune", "--target", target, *TINY, "--trials", str(trials), "--work-dir", str(work), "--rpc", rpc_addr, "--key", key]


@pytest.fixture(scope="module")
def tuned(rpc, tmp_path_factory):
    """A work folder tuned with 3 trials through the tracker: (folder, exit code)."""
    work = tmp_path_factory.mktemp("rpc-tuned") / "records"
    return work, main(tune_args(work, rpc))


@pytest.mark.slow
def test_tune_through_rpc_then_build_with_records(tuned, capsys, tmp_path):
    work, code = tuned
    assert code == 0
    recs = records(work)
    assert len(recs) >= 3
    secs = [float(s) for r in recs for s in (r[1][1] or [])]
    assert secs and 0 < min(secs) < 1.0, "no candidate was timed by the server"
    out = tmp_path / "art"
    code = main(["--target", "x86", *TINY, "--records", str(work), "--output", str(out)])
    err = capsys.readouterr().err
    applied = json.loads((out / "manifest.json").read_text())["schedules"]["tuned"]
    assert code == 0 and applied > 0 and f"tuned records applied to {applied} of" in err


def only_line(capsys) -> str:
    """The one line stderr has: the error, with no progress line before it (so nothing slow had started)."""
    err = capsys.readouterr().err
    assert len([line for line in err.splitlines() if line.strip()]) == 1, err
    return error_line(err)


def test_tracker_that_does_not_answer_fails_before_any_work(capsys, tmp_path):
    port = free_port()  # nothing listens there
    code = main(tune_args(tmp_path / "w", f"127.0.0.1:{port}", key="rpi4", target="rpi4"))
    line = only_line(capsys)
    assert code == 1 and line.startswith(f"error: RPC tracker 127.0.0.1:{port} does not answer"), line
    assert not (tmp_path / "w").exists()


def test_device_that_cannot_run_the_target_fails_before_tuning(rpc, capsys, tmp_path):
    """rpi4 (AArch64) code sent to the x86 server: a test kernel fails to load, before the model is imported."""
    code = main(tune_args(tmp_path / "w", rpc, target="rpi4"))
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 1 and len(lines) == 1, lines  # no progress line: the model was not imported
    assert lines[0].startswith(f"error: the device with key {KEY} cannot run code built for rpi4 (aarch64)"), lines
    assert not (tmp_path / "w").exists()
    held = remote.open_session(remote.RemoteConfig(*remote.parse_rpc(rpc), KEY, device_wait=10))
    del held  # the failed check gave the device back


@pytest.mark.parametrize(
    "args, message",
    [
        (["--rpc", "no-port-here", "--key", "k"], "--rpc must be HOST:PORT"),
        (["--rpc", "127.0.0.1:99999", "--key", "k"], "--rpc must be HOST:PORT"),
        (["--rpc", "127.0.0.1:9190"], "--rpc needs --key"),
        (["--key", "rpi4"], "give the tracker with --rpc HOST:PORT"),
        (["--target", "jetson-orin", "--rpc", "127.0.0.1:9190", "--key", "k"], "supports CPU (llvm) targets"),
    ],
)
def test_bad_rpc_arguments(capsys, tmp_path, args, message):
    code = main(["tune", *TINY, "--work-dir", str(tmp_path / "w"), *args])
    assert code == 1 and message in only_line(capsys)


@pytest.mark.slow
def test_key_with_no_free_device(rpc, tuned, capsys, tmp_path, monkeypatch):
    """An unknown key fails at once; a busy device fails after MNET_RPC_WAIT; the records stay as they were."""
    work = tmp_path / "records"
    shutil.copytree(tuned[0], work)
    before = (work / "database_tuning_record.json").read_bytes()
    assert main(tune_args(work, rpc, key="no-such-board")) == 1
    line = only_line(capsys)
    assert "no free device with key no-such-board on the tracker" in line and KEY in line, line

    host, port = remote.parse_rpc(rpc)
    held = remote.open_session(remote.RemoteConfig(host, port, KEY, device_wait=30))  # the only x86-local device
    monkeypatch.setenv("MNET_RPC_WAIT", "2")
    try:
        code = main(tune_args(work, rpc, trials=6))
    finally:
        del held
    line = only_line(capsys)
    assert code == 1 and f"no free device with key {KEY} on the tracker {rpc}" in line, line
    assert "waited 2 s" in line  # MNET_RPC_WAIT is the deadline the message reports
    assert (work / "database_tuning_record.json").read_bytes() == before


class Proxy:
    """A TCP relay in front of the tracker: stop() makes the 'tracker' stop answering mid-run."""

    def __init__(self, port: int) -> None:
        self.target = ("127.0.0.1", port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.running, self.sockets = True, []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while self.running:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                continue
            upstream = socket.create_connection(self.target)
            self.sockets += [conn, upstream]
            threading.Thread(target=self._pump, args=(conn, upstream), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, conn), daemon=True).start()

    @staticmethod
    def _pump(src, dst):
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def stop(self):
        self.running = False
        self.listener.close()
        for s in self.sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def test_tracker_lost_mid_run_keeps_records(rpc, capsys, tmp_path):
    """The tracker stops answering after the first batch: one-line error, exit 1, that batch's records kept."""
    proxy = Proxy(remote.parse_rpc(rpc)[1])
    work = tmp_path / "records"
    seen = []

    def watch():
        while proxy.running:
            if records(work):
                seen.append(len(records(work)))
                proxy.stop()
            time.sleep(0.05)

    threading.Thread(target=watch, daemon=True).start()
    code = main(tune_args(work, f"127.0.0.1:{proxy.port}", trials=40))
    proxy.stop()
    err = capsys.readouterr().err
    line = [line for line in err.strip().splitlines() if line.strip()][-1]
    assert code == 1 and line.startswith(f"error: RPC tracker 127.0.0.1:{proxy.port} does not answer"), line
    assert "Traceback" not in err
    kept = records(work)
    assert seen and len(kept) >= seen[0] >= 1
    from mnet_compile.schedule.tuning import open_database

    assert len(open_database(str(work)).get_all_tuning_records()) == len(kept)  # loads for the rerun that resumes


def test_host_fill_makes_inputs_for_a_runtime_without_random():
    """TVM_USE_RUNTIME_LIB=1 servers lack random_fill_for_measure: the inputs are made here and copied."""
    import numpy as np
    import tvm

    for dtype in ("float32", "int32"):
        t = tvm.runtime.empty((4, 5), dtype, tvm.cpu())
        remote.host_fill(t)
        data = t.numpy()
        assert data.dtype == dtype and np.abs(data).max() > 0


# --- slow: an AArch64 RPC server in an emulated CPython ------------------------------------------------


# `python -m tvm.exec.rpc_server` starts its listener through tvm.support.popen_pool, which execs
# sys.executable: an AArch64 binary that this machine cannot exec without qemu registered in binfmt_misc
# (qemu-user does not follow execve). On a board that command is all it takes; here the emulated CPython
# runs the same listener (rpc.server.PopenRPCServerState: bind, register with the tracker, fork a child
# per session) in its own process.
EMULATED_SERVER = """
import sys
from tvm.rpc import server
port, tracker_port, key = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
state = server.PopenRPCServerState("127.0.0.1", port, port + 10, False, ("127.0.0.1", tracker_port), key,
                                   None, None, False, True, None)
print("aarch64 RPC server on port", state.port, flush=True)
state.thread.join()
"""


@pytest.mark.slow
@pytest.mark.skipif(
    any(shutil.which(t) is None for t in ("qemu-aarch64-static", "aarch64-linux-gnu-g++", "debootstrap", "dpkg-deb")),
    reason="needs qemu-user-static, g++-aarch64-linux-gnu and debootstrap",
)
def test_tune_arm_cpu_through_emulated_aarch64_rpc_server(rpc, capsys, tmp_path, monkeypatch):
    """TVM's RPC server in Debian's arm64 CPython under qemu (cortex-a72), runtime-only TVM
    (TVM_USE_RUNTIME_LIB=1: no compiler, no random fill), registered with the loopback tracker; the
    arm_cpu candidates are cross-compiled here. Emulated timings mean nothing: this proves the path."""
    from ..emulation import emulated_python, install_wheels

    root = emulated_python("aarch64")
    install_wheels(root, "aarch64")
    python = sorted(p for p in (root / "usr" / "bin").glob("python3.*") if p.name[len("python3."):].isdigit())[-1]
    qemu = [shutil.which("qemu-aarch64-static"), "-cpu", "cortex-a72", "-L", str(root), str(python)]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(root / "opt" / "site"),
           "PYTHONDONTWRITEBYTECODE": "1", "TVM_USE_RUNTIME_LIB": "1"}  # fmt: skip
    port = remote.parse_rpc(rpc)[1]
    (tmp_path / "rpc_server.py").write_text(EMULATED_SERVER)
    server = start(qemu + [str(tmp_path / "rpc_server.py"), str(free_port()), str(port), "arm-qemu"], tmp_path / "server.log", env=env)
    try:
        wait_for_key(port, "arm-qemu", [server], timeout=300)
        monkeypatch.setenv("MNET_RPC_SESSION_TIMEOUT", "300")
        work = tmp_path / "records"
        code = main(tune_args(work, rpc, key="arm-qemu", trials=3, target="arm_cpu"))
        err = capsys.readouterr().err
    finally:
        stop(server)
    assert code == 0, err[-3000:] + (tmp_path / "server.log").read_text()[-3000:]
    recs = records(work)
    secs = [float(s) for r in recs for s in (r[1][1] or [])]
    assert len(recs) >= 3 and secs and min(secs) < 1.0, recs
