"""Build and time the configurations, here like the benchmark or on a board through RPC; results cached.

Here (presets that run on this machine), every timing is a fresh process that loads one artifact and
nothing else (bench.measure_alone: TVM_NUM_THREADS set), and the rounds alternate the configurations
(A B C A B C ...) so that the machine's drift hits all of them alike; median and p90 are over every round's
runs. Through RPC (`--rpc HOST:PORT --key KEY`, the tracker `tune` uses), each round asks the tracker for a
session per configuration, uploads model.so (cross-compiled here), and times `runs` inferences with the VM's
time_evaluator on the device; the same statistics.

The cache is one JSON file per target, cache_root()/pareto/<target>.json, one entry per measurement keyed
by the target (name and TVM target), the configuration, where it ran (this CPU's description, or the
tracker's key), the schedules applied, the threads, rounds and runs, the versions of TVM, tvm-ffi and
mnet-compile, and a hash of the compiling stages' code and the shipped records (compiler_fingerprint); so a
rerun with another budget or a plot measures nothing again, and a new compiler measures again.
`--remeasure` ignores it (and overwrites).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from importlib import metadata
from pathlib import Path

import numpy as np

from ..errors import MnetError
from ..resources import cache_root, data_dir, tvm_versions
from . import config_name


def summarize(times_ms) -> dict:
    times = np.asarray(times_ms, dtype=float)
    return {"median_ms": float(np.median(times)), "p90_ms": float(np.percentile(times, 90)), "runs": int(times.size)}


# What decides the code a configuration compiles to: a change here (new default schedules, re-tuned
# records) is a new build, so the cache keys carry a hash of these files besides the package version.
COMPILER_PARTS = ("models", "frontends", "graph", "schedule", "export")


def compiler_fingerprint() -> str:
    """sha256 (16 hex digits) of the compiling stages' sources and the shipped records."""
    package, records = Path(__file__).resolve().parents[1], data_dir("schedules")
    files = {str(p.relative_to(package)): p for part in COMPILER_PARTS for p in (package / part).rglob("*.py")}
    files.update({f"schedules/{p.relative_to(records)}": p for p in records.rglob("*.json*")})  # .json.gz shipped
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + files[name].read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def context(preset, where: str, schedules: str, threads: int | None, rounds: int, runs: int) -> dict:
    """What a measurement depends on besides the configuration: the key fields of the cache."""
    try:
        version = metadata.version("mnet-compile")
    except metadata.PackageNotFoundError:
        version = "unknown"
    versions = {**tvm_versions(), "mnet-compile": version, "compiler": compiler_fingerprint()}
    return {"target": preset.name, "tvm_target": preset.tvm_spec, "where": where, "schedules": schedules,
            "threads": threads, "rounds": rounds, "runs": runs, "versions": versions}


class ResultCache:
    """Measurements of one target, read from and written (atomically) to a JSON file."""

    def __init__(self, target_name: str, root: Path | None = None) -> None:
        self.path = Path(root or cache_root()) / "pareto" / f"{Path(target_name).stem}.json"
        try:
            self.entries = json.loads(self.path.read_text())["entries"]
        except (OSError, ValueError, KeyError, TypeError):
            self.entries = []  # none yet, or unreadable: measured again and rewritten

    @staticmethod
    def _key(ctx: dict, alpha: float, resolution: int) -> str:
        return json.dumps({**ctx, "config": config_name(alpha, resolution)}, sort_keys=True)

    def get(self, ctx: dict, alpha: float, resolution: int) -> dict | None:
        key = self._key(ctx, alpha, resolution)
        return next((e["result"] for e in self.entries if e.get("key") == key), None)

    def put(self, ctx: dict, alpha: float, resolution: int, result: dict) -> None:
        key = self._key(ctx, alpha, resolution)
        self.entries = [e for e in self.entries if e.get("key") != key] + [{"key": key, "result": result}]

    def save(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
            with os.fdopen(fd, "w") as f:
                json.dump({"entries": self.entries}, f, indent=1)
            os.replace(tmp, self.path)
        except OSError as exc:
            raise MnetError(f"cannot write the results cache {self.path}: {exc.strerror}") from None


def build(configs, target: str, workdir: Path, tuned: bool, records: str | None, log) -> dict:
    """Compile every configuration into workdir/<alpha>-<resolution>/artifact (+ x.npy, the timed input)."""
    from ..pipeline import CompileRequest, compile_model

    folders = {}
    for alpha, resolution in configs:
        folder = Path(workdir).absolute() / config_name(alpha, resolution)
        folder.mkdir(parents=True, exist_ok=True)
        log(f"compiling {config_name(alpha, resolution)} for {target}")
        request = CompileRequest(alpha=alpha, resolution=resolution, target=target, output=str(folder / "artifact"),
                                 force=True, tuned=tuned, records=records)
        compile_model(request, log=lambda message: None)
        x = np.random.default_rng(0).standard_normal((1, 3, resolution, resolution)).astype("float32")
        np.save(folder / "x.npy", x)
        folders[(alpha, resolution)] = folder
    return folders


def records_applied(folder: Path) -> str:
    """"tuned/kernels", or "tuned+transferred/kernels", of a built configuration, from its manifest: how
    many kernels their own tuned record (and a transferred one) scheduled."""
    schedules = json.loads((Path(folder) / "artifact" / "manifest.json").read_text())["schedules"]
    moved = schedules.get("transferred", 0)
    return f"{schedules['tuned']}{f'+{moved}' if moved else ''}/{schedules['kernels']}"


def measure_here(folders: dict, rounds: int, runs: int, threads: int, log) -> dict:
    """{config: summary}: each artifact timed in its own process, rounds interleaved."""
    from ..bench import measure_alone

    samples = {config: [] for config in folders}
    for r in range(rounds):
        for config, folder in folders.items():
            result = measure_alone("mnet-compile", folder, runs, threads)
            if "error" in result:
                raise MnetError(f"timing {config_name(*config)} failed: {result['error']}")
            samples[config] += result["times"]
        log(f"round {r + 1}/{rounds} done")
    return {config: summarize(times) for config, times in samples.items()}


def _time_on_device(remote_config, folder: Path, runs: int) -> list[float]:
    """One session: upload model.so, load it into a VM on the device, time `runs` inferences (ms)."""
    from tvm.runtime import tensor
    from tvm.runtime.vm import VirtualMachine

    from ..schedule.remote import open_session

    session = open_session(remote_config)
    try:
        try:
            session.upload(str(folder / "artifact" / "model.so"), "model.so")
            dev = session.cpu(0)
            vm = VirtualMachine(session.load_module("model.so"), dev)
        except Exception as exc:
            raise MnetError(f"the device with key {remote_config.key} cannot load the model built for "
                            f"{remote_config.target}: {' '.join(str(exc).split())[:200]}") from None
        vm.set_input("main", tensor(np.load(folder / "x.npy"), dev))
        result = vm.time_evaluator("invoke_stateful", dev, number=1, repeat=runs)("main")
        return [t * 1e3 for t in result.results]
    finally:
        session = None  # ends the session: the device is free again for the next one


def measure_remote(remote_config, folders: dict, rounds: int, runs: int, log) -> dict:
    """{config: summary}: each artifact timed on a device of the key in its own session, rounds interleaved."""
    from ..schedule.remote import with_deadline

    samples = {config: [] for config in folders}
    for r in range(rounds):
        for config, folder in folders.items():
            samples[config] += with_deadline(lambda: _time_on_device(remote_config, folder, runs), remote_config,
                                             f"to time {config_name(*config)}")
        log(f"round {r + 1}/{rounds} done")
    return {config: summarize(times) for config, times in samples.items()}
