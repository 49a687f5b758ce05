"""Tuning on a board through TVM's RPC tracker: candidates built here with the preset's (cross) compiler,
timed on the device by its RPC server.

    host$   python -m tvm.exec.rpc_tracker --host 0.0.0.0 --port 9190        # needs tornado
    board$  python -m tvm.exec.rpc_server --tracker HOST:9190 --key rpi4     # apache-tvm + numpy on the board
    host$   mnet-compile tune --target rpi4 --rpc HOST:9190 --key rpi4 --trials 500

Before the model is imported, the tracker must answer, a server of the key must be registered and come
free, and a test kernel built for the target must load and run on it (a key naming the wrong board fails
in seconds). Then each candidate gets its own session from the tracker (upload the .so, load it, time it,
end the session), as MetaSchedule's stock RPCRunner does, but in this process: no worker pool to start,
and the tracker and the device are given deadlines. A candidate that fails on the device (crash, session
timeout) is a failed trial; a tracker that stops answering, a device that never frees up or cannot load
this target's code ends the run with a one-line MnetError. The batches measured before that are already
in the work folder (tuning.DurableScheduler commits every batch), so rerunning the same command resumes.

`mnet-compile pareto --rpc` times whole models the same way (checked_device, open_session, with_deadline).

Deadlines (seconds; the environment variables override them): the tracker must answer within
MNET_RPC_CONNECT_TIMEOUT (5), a device of the key must come free within MNET_RPC_WAIT (60), and one
candidate's session may last MNET_RPC_SESSION_TIMEOUT (120) before the server ends it.
"""

from __future__ import annotations

import os
import socket
import struct
import tempfile
import threading
from dataclasses import dataclass

import tvm
from tvm.ir.utils import derived_object
from tvm.s_tir.meta_schedule.runner import EvaluatorConfig, PyRunner
from tvm.s_tir.meta_schedule.runner.local_runner import LocalRunnerFuture
from tvm.s_tir.meta_schedule.runner.utils import alloc_argument_common, run_evaluator_common

from ..errors import MnetError
from .measure import COLD_EVALUATOR, EVALUATOR, InProcessBuilder

CONNECT_TIMEOUT_S = 5.0
DEVICE_WAIT_S = 60.0
SESSION_TIMEOUT_S = 120.0
REMOTE_NAME = "kernel.so"  # the uploaded candidate's name in the session's (private) folder on the device


def _seconds(env: str, default: float) -> float:
    value = os.environ.get(env)
    if not value:
        return default
    try:
        seconds = float(value)
    except ValueError:
        raise MnetError(f"{env} must be a number of seconds, got {value!r}") from None
    if seconds <= 0:
        raise MnetError(f"{env} must be positive, got {value!r}")
    return seconds


@dataclass(frozen=True)
class RemoteConfig:
    """Where the tracker is, which device key to ask it for, and the deadlines."""

    host: str
    port: int
    key: str
    connect_timeout: float = CONNECT_TIMEOUT_S
    device_wait: float = DEVICE_WAIT_S
    session_timeout: float = SESSION_TIMEOUT_S
    target: str = ""  # what the candidates are built for, for messages: "rpi4 (aarch64)"

    @classmethod
    def from_args(cls, rpc: str, key: str | None, target: str = "") -> RemoteConfig:
        """From the CLI's --rpc HOST:PORT and --key KEY, with the deadlines of the environment."""
        host, port = parse_rpc(rpc)
        if not key or not key.strip():
            raise MnetError(
                "--rpc needs --key: the key the device's RPC server registered with "
                "(python -m tvm.exec.rpc_server --tracker HOST:PORT --key KEY)"
            )
        return cls(
            host, port, key.strip(),
            connect_timeout=_seconds("MNET_RPC_CONNECT_TIMEOUT", CONNECT_TIMEOUT_S),
            device_wait=_seconds("MNET_RPC_WAIT", DEVICE_WAIT_S),
            session_timeout=_seconds("MNET_RPC_SESSION_TIMEOUT", SESSION_TIMEOUT_S),
            target=target,
        )  # fmt: skip

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_rpc(text: str) -> tuple[str, int]:
    """'HOST:PORT' (or '[IPv6]:PORT') -> (host, port)."""
    text = (text or "").strip()
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise MnetError(f"--rpc must be HOST:PORT of a TVM RPC tracker (e.g. 192.168.1.10:9190), got {text!r}")
    return host, int(port)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, socket.timeout):
        return "timed out"
    if isinstance(exc, socket.gaierror):
        return "unknown host"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return " ".join(str(exc).split())[:200] or type(exc).__name__


class Tracker:
    """A short-lived connection to the tracker with socket deadlines (tvm.rpc.connect_tracker retries a
    refused connection for 60 s and waits for a device without limit)."""

    def __init__(self, config: RemoteConfig) -> None:
        from tvm.rpc import base

        self.config, self._base = config, base
        try:
            self.sock = socket.create_connection((config.host, config.port), timeout=config.connect_timeout)
        except OSError as exc:
            raise MnetError(f"RPC tracker {config.address} does not answer ({_reason(exc)})") from None
        try:
            self.sock.settimeout(config.connect_timeout)
            self.sock.sendall(struct.pack("<i", base.RPC_TRACKER_MAGIC))
            magic = struct.unpack("<i", base.recvall(self.sock, 4))[0]
        except OSError as exc:
            self.close()
            raise MnetError(f"RPC tracker {config.address} does not answer ({_reason(exc)})") from None
        if magic != base.RPC_TRACKER_MAGIC:
            self.close()
            raise MnetError(f"{config.address} is not a TVM RPC tracker")

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _call(self, message, timeout: float):
        self.sock.settimeout(timeout)
        self._base.sendjson(self.sock, message)
        return self._base.recvjson(self.sock)

    def summary(self) -> dict:
        """{"queue_info": {key: {"free": n, "pending": m}}, "server_info": [{"key": "server:KEY", ...}]}"""
        try:
            value = self._call([self._base.TrackerCode.SUMMARY], self.config.connect_timeout)
        except (OSError, ValueError) as exc:
            raise MnetError(f"RPC tracker {self.config.address} does not answer ({_reason(exc)})") from None
        return value[1]

    def server_keys(self) -> dict[str, int]:
        """How many servers are registered under each key."""
        keys: dict[str, int] = {}
        for item in self.summary().get("server_info", []):
            kind, _, key = str(item.get("key", "")).partition(":")
            if kind == "server":
                keys[key] = keys.get(key, 0) + 1
        return keys

    def request(self) -> tuple[str, int, str]:
        """(address, port, match key) of a free server of the key, waiting at most device_wait seconds."""
        config = self.config
        try:
            value = self._call([self._base.TrackerCode.REQUEST, config.key, "", 1], config.device_wait)
        except socket.timeout:
            raise MnetError(
                f"no free device with key {config.key} on the tracker {config.address} "
                f"(waited {config.device_wait:g} s; MNET_RPC_WAIT sets how long)"
            ) from None
        except (OSError, ValueError) as exc:
            raise MnetError(f"RPC tracker {config.address} does not answer ({_reason(exc)})") from None
        if not value or value[0] != self._base.TrackerCode.SUCCESS:
            raise MnetError(f"RPC tracker {config.address} refused the request for key {config.key}: {value}")
        url, port, matchkey = value[1]
        return url, int(port), matchkey


def open_session(config: RemoteConfig):
    """An RPC session on a free device of the key (MnetError when the tracker or the device fails us)."""
    from tvm import rpc

    with Tracker(config) as tracker:
        url, port, matchkey = tracker.request()
    try:
        return rpc.connect(url, port, matchkey, session_timeout=config.session_timeout)
    except Exception as exc:
        raise MnetError(
            f"the device with key {config.key} at {url}:{port} refuses a session: {' '.join(str(exc).split())[:200]}"
        ) from None


def check_device(config: RemoteConfig, probe: str | None = None, device_type: str = "cpu") -> str:
    """Before any slow work: the tracker answers, a server of the key is registered, one comes free within
    device_wait, and (given `probe`, a tiny kernel built like the candidates) it loads and runs this target's
    code. Returns a line saying what the tracker has for the key."""
    with Tracker(config) as tracker:
        keys = tracker.server_keys()
    if config.key not in keys:
        known = ", ".join(sorted(keys)) or "none"
        raise MnetError(
            f"no free device with key {config.key} on the tracker {config.address} "
            f"(no RPC server registered that key; keys there: {known})"
        )
    error = with_deadline(lambda: _probe(config, probe, device_type), config, "to run a first session")
    if error is not None:
        raise MnetError(f"the device with key {config.key} cannot run code built for {config.target or 'this target'}: {error}")
    return f"{keys[config.key]} device(s) with key {config.key} on the RPC tracker {config.address}"


def _probe(config: RemoteConfig, probe: str | None, device_type: str) -> str | None:
    session = open_session(config)
    try:
        if probe is not None:
            status, detail = _time_on(session, probe, device_type, None, None)
            if status != "ok":
                return detail
        return None
    finally:
        session = None  # ends the session: the server registers with the tracker again


def with_deadline(work, config: RemoteConfig, what: str):
    """Run `work()` in a daemon thread; a device that vanishes mid-session (no FIN, no RST) would hang a
    socket read forever, and the server's own session timeout cannot help if the server is gone."""
    box: dict = {}

    def target():
        try:
            box["value"] = work()
        except BaseException as exc:  # handed to the caller's thread
            box["error"] = exc

    deadline = config.connect_timeout * 2 + config.device_wait + config.session_timeout + 30
    thread = threading.Thread(target=target, name="mnet-rpc", daemon=True)
    thread.start()
    thread.join(deadline)
    if thread.is_alive():
        raise MnetError(f"the device with key {config.key} stopped answering (nothing for {deadline:.0f} s {what})")
    if "error" in box:
        raise box["error"]
    return box["value"]


def host_fill(tensor) -> None:
    """Random inputs made here and copied over, for a device runtime without
    tvm.contrib.random.random_fill_for_measure (TVM_USE_RUNTIME_LIB=1 leaves it out)."""
    import numpy as np

    rng = np.random.default_rng(0)
    shape, dtype = tuple(int(d) for d in tensor.shape), str(tensor.dtype)
    if dtype.startswith(("float", "bfloat")):
        data = rng.uniform(-1.0, 1.0, size=shape).astype("float32").astype(dtype)
    elif dtype == "bool":
        data = rng.integers(0, 2, size=shape).astype(bool)
    else:
        data = rng.integers(0, 8, size=shape).astype(dtype)
    tensor.copyfrom(data)


def measure(config: RemoteConfig, evaluator, artifact_path: str, device_type: str, args_info: list) -> tuple:
    """Time one built candidate on a device of the key: (median seconds, None) or (None, error message).

    Raises MnetError for what ends the run: no tracker, no free device, code the device cannot load."""
    session = open_session(config)
    try:
        status, detail = _time_on(session, artifact_path, device_type, evaluator, args_info)
    finally:
        session = None  # no exception below keeps the session alive, so the server is free again at once
    if status == "load":
        raise MnetError(f"the device with key {config.key} cannot load the kernels built for {config.target or 'this target'}: {detail}")
    return (detail, None) if status == "ok" else (None, detail)


def _time_on(session, artifact_path: str, device_type: str, evaluator, args_info) -> tuple[str, object]:
    """("ok", [median seconds]), ("load", why) or ("run", why); never raises, so no traceback holds the
    session. Without an evaluator (the probe), calls the module's main once on float32[4] arguments."""
    try:
        session.upload(artifact_path, REMOTE_NAME)
        rt_mod = session.load_module(REMOTE_NAME)
    except Exception as exc:
        return "load", _one_line(exc)
    try:
        dev = session.device(device_type, 0)
        if evaluator is None:
            args = [tvm.runtime.empty((4,), "float32", dev) for _ in range(2)]
            host_fill(args[0])
            rt_mod["main"](*args)
            return "ok", None
        try:
            fill = session.get_function("tvm.contrib.random.random_fill_for_measure")
        except (AttributeError, RuntimeError):
            fill = host_fill
        args = alloc_argument_common(fill, dev, args_info, 1)
        costs = sorted(run_evaluator_common(rt_mod, dev, evaluator, args))
        return "ok", [costs[len(costs) // 2]]  # the median, as measure.InProcessRunner reports
    except Exception as exc:  # the candidate failed on the device (crash, session timeout): a failed trial
        return "run", f"{type(exc).__name__}: {exc}"[:2000]


def _one_line(exc: BaseException) -> str:
    text, name = " ".join(str(exc).split()), type(exc).__name__
    return (text if text.startswith(name) else f"{name}: {text}")[:400]


def compile_probe(target, fcompile, folder: str) -> str:
    """A one-loop kernel (B = A + 1 over float32[4]) compiled and linked like the candidates."""
    from tvm import te

    a = te.placeholder((4,), "float32", name="A")
    b = te.compute((4,), lambda i: a[i] + 1.0, name="B")
    path = os.path.join(folder, "probe.so")
    tvm.compile(tvm.IRModule({"main": te.create_prim_func([a, b])}), target=target).export_library(path, fcompile=fcompile)
    return path


@derived_object
class RemoteRunner(PyRunner):
    """MetaSchedule runner that times each candidate on a device reached through the RPC tracker.

    `failure` keeps the MnetError that ended the run: raised here, it reaches the caller of tune_tasks
    wrapped by the C++ task scheduler, so pipeline.tune_model raises this one instead."""

    def __init__(self, config: RemoteConfig, evaluator: EvaluatorConfig = EVALUATOR) -> None:
        super().__init__()
        self.config, self.evaluator, self.failure = config, evaluator, None

    def run(self, runner_inputs):
        futures = []
        for inp in runner_inputs:
            info = [a.as_json() for a in inp.args_info]
            path, device_type = str(inp.artifact_path), str(inp.device_type)
            try:
                secs, error = with_deadline(
                    lambda: measure(self.config, self.evaluator, path, device_type, info),
                    self.config, "to time a candidate",
                )  # fmt: skip
            except MnetError as exc:
                self.failure = exc
                raise
            futures.append(LocalRunnerFuture(res=secs) if error is None else LocalRunnerFuture(error_message=error))
        return futures


def remote_measure(preset, rpc: str, key: str | None, log=print, cold_cache: bool = False):
    """(builder, runner) for `tune` through an RPC tracker, after checking the tracker, the key and the
    preset's cross compiler: everything that can fail fast fails here, before the model is imported.
    cold_cache: the board flushes each candidate's weights from its caches before every run."""
    config, fcompile = checked_device(preset, rpc, key, log, "tuning")
    return InProcessBuilder(fcompile=fcompile), RemoteRunner(config, COLD_EVALUATOR if cold_cache else EVALUATOR)


def checked_device(preset, rpc: str, key: str | None, log=print, what: str = "tuning"):
    """(RemoteConfig, the preset's fcompile) once the tracker answers and a device of the key runs a test
    kernel built for the preset (MnetError, in seconds, otherwise)."""
    config = RemoteConfig.from_args(rpc, key, target=preset.label)
    if preset.backend != "cpu":
        raise MnetError(f"{what} through RPC supports CPU (llvm) targets; target {preset.name} is {preset.tvm_spec['kind']}")
    fcompile = preset.compiler()  # a missing cross compiler names its install command
    with Tracker(config):  # a tracker that does not answer fails before anything is compiled
        pass
    with tempfile.TemporaryDirectory(prefix="mnet-rpc-") as tmp:
        try:
            probe = compile_probe(preset.tvm, fcompile, tmp)
        except Exception as exc:
            raise MnetError(f"building a test kernel for {config.target} failed: {_one_line(exc)}") from None
        log(check_device(config, probe))
    return config, fcompile
