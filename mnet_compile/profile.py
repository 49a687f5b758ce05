"""Where the time goes: per fused kernel of an artifact, time, calls, GFLOP/s, share of the FMA peak, and
whether its own tuned record, a transferred record or the default schedule made it.

Runs in its own process (`python -m mnet_compile.profile DIR RUNS THREADS`, as `mnet-compile profile`
starts it) so that TVM's thread pool has the cores alone. Kernel times come from the VM's
instrumentation hook around every call, so they include the call overhead (a few microseconds).
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import time

import numpy as np

PACKED = "_prepacked"  # the suffix a kernel gets once its weight packing is split out of it


def kernel_times(folder: str, runs: int) -> dict:
    """{kernel symbol: (seconds per inference, calls per inference)} over `runs` inferences."""
    import tvm

    from .device.runtime import load

    model = load(folder)
    vm = model._vm
    x = np.random.default_rng(0).standard_normal(model.manifest["input"]["shape"]).astype("float32")
    for _ in range(5):
        model(x)
    total, calls, start = collections.defaultdict(float), collections.Counter(), {}

    def instrument(func, symbol, before, ret, *args):
        if before:
            start[symbol] = time.perf_counter()
        else:
            total[symbol] += time.perf_counter() - start[symbol]
            calls[symbol] += 1
        return 0

    vm.set_instrument(tvm.runtime.convert(instrument) if hasattr(tvm.runtime, "convert") else instrument)
    for _ in range(runs):
        model(x)
    return {name: (total[name] / runs, calls[name] // runs) for name in total if not name.startswith("vm.builtin")}


def profile_rows(folder: str, runs: int, peak_gflops: float | None) -> list[dict]:
    """Kernel rows, slowest first, with the manifest's FLOPs and schedule source."""
    with open(os.path.join(folder, "manifest.json")) as f:
        per_kernel = json.load(f).get("schedules", {}).get("per_kernel", {})
    rows = []
    for name, (secs, calls) in kernel_times(folder, runs).items():
        info = per_kernel.get(name.removesuffix(PACKED), {})
        row = {"kernel": name.removesuffix(PACKED), "ms": secs * 1e3, "calls": calls, "schedule": info.get("schedule", "-")}
        if info.get("flops") and secs > 0:
            row["gflops"] = info["flops"] * calls / secs / 1e9
            if peak_gflops:
                row["share_of_peak"] = row["gflops"] / peak_gflops
        rows.append(row)
    return sorted(rows, key=lambda r: -r["ms"])


def format_profile(rows: list[dict], peak_gflops: float | None) -> str:
    total = sum(r["ms"] for r in rows)
    lines = [
        f"kernel time {total:.3f} ms per inference; FMA peak {peak_gflops:.0f} GFLOP/s" if peak_gflops else
        f"kernel time {total:.3f} ms per inference",
        f"{'kernel':42} {'ms':>8} {'share':>6} {'calls':>5} {'GFLOP/s':>8} {'peak':>6}  schedule",
    ]  # fmt: skip
    for r in rows:
        gflops = f"{r['gflops']:8.1f}" if "gflops" in r else f"{'-':>8}"
        peak = f"{100 * r['share_of_peak']:5.1f}%" if "share_of_peak" in r else f"{'-':>6}"
        lines.append(f"{r['kernel'][:42]:42} {r['ms']:8.3f} {100 * r['ms'] / total:5.1f}% {r['calls']:5d} {gflops} {peak}  {r['schedule']}")
    return "\n".join(lines)


def profile(folder: str, runs: int = 50, threads: int = 2, peak_gflops: float | None = None) -> list[dict]:
    """Profile an artifact in a fresh process with `threads` TVM threads; returns the rows."""
    env = dict(os.environ, TVM_NUM_THREADS=str(threads))
    proc = subprocess.run(
        [sys.executable, "-m", "mnet_compile.profile", folder, str(runs), json.dumps(peak_gflops)],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        raise RuntimeError(lines[-1] if lines else f"profiling exited with {proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    print(json.dumps(profile_rows(sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]))))
