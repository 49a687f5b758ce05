"""Benchmark against the runtimes people use instead: each runtime alone in its own process, round-robin.

Two thread pools in one process (ORT's, PyTorch's OpenMP, TVM's) fight over the cores, so every
measurement is a fresh `python -m mnet_compile.bench RUNTIME DIR RUNS THREADS` process; the rounds
alternate the runtimes (A B C A B C ...) so that the machine's drift hits all of them alike.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PEERS = ["mnet-compile", "pytorch", "onnxruntime", "openvino", "tflite"]
# int8 rows on request (--peers): ours (--quantize int8), LiteRT (XNNPACK) on a full-integer .tflite of our
# int8 model (same records), ONNX Runtime on its own QDQ model (its quantizer, calibrated on the same seeded
# set); checked by top-1 against PyTorch fp32, not by the fp32 tolerance.
INT8_PEERS = ["mnet-compile-int8", "tflite-int8", "onnxruntime-int8"]
BENCH_DIR = "artifacts/bench"
# Every runtime warms up for at least this long before it is timed, as TFLite's benchmark_model does
# (--warmup_min_secs=0.5): five calls of a 0.2 ms model (0.25-128) left ours at 0.37 ms, ONNX Runtime at
# 0.29; after 0.5 s, 0.21 and 0.28 (steady state).
WARMUP_S = 0.5


# ---- workers: run inside their own process -------------------------------------------------------


def _time(run, x, runs: int, warmup_s: float = WARMUP_S) -> tuple[list[float], np.ndarray]:
    """`runs` latencies in ms after a warm-up of at least max(3, runs / 10) calls and `warmup_s` seconds."""
    out = run(x)
    start, calls = time.perf_counter(), 0
    while calls < max(3, runs // 10) or time.perf_counter() - start < warmup_s:
        run(x)
        calls += 1
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run(x)
        times.append((time.perf_counter() - start) * 1e3)
    return times, np.asarray(out).reshape(1, -1)


def _runner(runtime: str, folder: Path, threads: int):
    """A callable for one runtime, with its thread count set; imports only that runtime."""
    if runtime in ("mnet-compile", "mnet-compile-int8"):
        from .device.runtime import load

        return load(str(folder / ("artifact" if runtime == "mnet-compile" else "artifact_int8")))
    if runtime == "pytorch":
        import torch

        from .models import create_model

        torch.set_num_threads(threads)
        config = json.loads((folder / "config.json").read_text())
        model = create_model(alpha=config["alpha"], seed=config["seed"])

        def run(x):
            with torch.inference_mode():
                return model(torch.from_numpy(x)).numpy()

        return run
    if runtime in ("onnxruntime", "onnxruntime-int8"):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        name = "model.onnx" if runtime == "onnxruntime" else "model_int8.onnx"
        session = ort.InferenceSession(str(folder / name), options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda x: session.run(None, {name: x})[0]
    if runtime == "openvino":
        import openvino as ov

        core = ov.Core()
        compiled = core.compile_model(
            str(folder / "model.onnx"), "CPU", {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
        )
        request = compiled.create_infer_request()
        return lambda x: request.infer([x])[compiled.output(0)]
    if runtime in ("tflite", "tflite-int8"):
        from ai_edge_litert.interpreter import Interpreter

        name = "model.tflite" if runtime == "tflite" else "model_int8.tflite"
        interpreter = Interpreter(model_path=str(folder / name), num_threads=threads)
        interpreter.allocate_tensors()
        inp = interpreter.get_input_details()[0]["index"]
        out = interpreter.get_output_details()[0]["index"]

        def run(x):
            interpreter.set_tensor(inp, np.ascontiguousarray(x.transpose(0, 2, 3, 1)))
            interpreter.invoke()
            return interpreter.get_tensor(out)

        return run
    raise ValueError(runtime)


def worker(runtime: str, folder: str, runs: int, threads: int) -> None:
    folder = Path(folder)
    x = np.load(folder / "x.npy")
    times, out = _time(_runner(runtime, folder, threads), x, runs)
    print(json.dumps({"times": times, "output": out.tolist()}))


# ---- orchestration -------------------------------------------------------------------------------

FMA_PEAK_C = r"""
#include <immintrin.h>
#include <stdio.h>
#include <omp.h>
/* The widest FMA the CPU has: 16 fp32 lanes with AVX-512, else 8 (AVX2). */
#ifdef __AVX512F__
typedef __m512 vec;
#define LANES 16
#define SET1 _mm512_set1_ps
#define FMA _mm512_fmadd_ps
#define ADD _mm512_add_ps
#define FIRST(v) _mm512_cvtss_f32(v)
#else
typedef __m256 vec;
#define LANES 8
#define SET1 _mm256_set1_ps
#define FMA _mm256_fmadd_ps
#define ADD _mm256_add_ps
#define FIRST(v) _mm256_cvtss_f32(v)
#endif
#define CHAINS 12
int main(void) {
  long iters = 20000000L;
  double best = 0;
  for (int rep = 0; rep < 5; rep++) {
    double t0 = omp_get_wtime();
    float sink = 0;
#pragma omp parallel reduction(+ : sink)
    {
      /* CHAINS independent FMA chains hide the FMA latency. Each starts from its own value: chains the
         compiler can prove equal it computes once (identical ones made an earlier probe report 5x the
         FMAs it ran). */
      volatile float mv = 0.999999f, cv = 1e-7f;
      vec m = SET1(mv), c = SET1(cv), a[CHAINS];
      for (int j = 0; j < CHAINS; j++) a[j] = SET1(1.0f + 0.125f * j);
      for (long i = 0; i < iters; i++) {
#pragma GCC unroll 12
        for (int j = 0; j < CHAINS; j++) a[j] = FMA(a[j], m, c);
      }
      vec s = a[0];
      for (int j = 1; j < CHAINS; j++) s = ADD(s, a[j]);
      sink += FIRST(s);
    }
    double dt = omp_get_wtime() - t0;
    double flops = 2.0 * LANES * CHAINS * iters * omp_get_max_threads();
    if (flops / dt > best) best = flops / dt;
    if (sink == 12345) printf("!");
  }
  printf("%f %d\n", best / 1e9, LANES);
  return 0;
}
"""


def fma_peak_gflops(threads: int) -> float | None:
    """The machine's fp32 FMA peak on `threads` threads with its widest vectors (AVX-512 where the CPU
    has it, else AVX2), measured now; None off x86 or without gcc."""
    with tempfile.TemporaryDirectory(prefix="mnet-peak-") as tmp:
        return _run_fma_peak(Path(tmp), threads)


def _run_fma_peak(workdir: Path, threads: int) -> float | None:
    src, exe = workdir / "fma_peak.c", workdir / "fma_peak"
    src.write_text(FMA_PEAK_C)
    try:
        subprocess.run(["gcc", "-O3", "-march=native", "-mfma", "-fopenmp", str(src), "-o", str(exe)], check=True, capture_output=True)
        env = dict(os.environ, OMP_NUM_THREADS=str(threads))
        return float(subprocess.run([str(exe)], check=True, capture_output=True, text=True, env=env).stdout.split()[0])
    except (OSError, subprocess.CalledProcessError, ValueError, IndexError):
        return None


def cpu_description() -> str:
    """The CPU model and its widest SIMD / integer dot-product features, from /proc/cpuinfo."""
    import platform

    try:
        with open("/proc/cpuinfo") as f:
            info = dict(line.split(":", 1) for line in f.read().split("\n\n")[0].splitlines() if ":" in line)
    except OSError:
        return platform.machine()
    info = {k.strip(): v.strip() for k, v in info.items()}
    flags = set(info.get("flags", info.get("Features", "")).split())
    isa = [f for f in ("avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "avx2", "fma", "asimd", "asimddp") if f in flags]
    return f"{info.get('model name', platform.machine())}, {os.cpu_count()} logical CPUs, {' '.join(isa) or 'no AVX2/NEON'}"


def prepare(alpha: float, resolution: int, folder: Path, tuned: bool, log, int8: bool = False, records=None) -> None:
    """Model files for every peer plus our artifact (built with `records`, a tuning folder, if given), all
    with the same seeded weights; with `int8` also our int8 artifact, the full-integer .tflite of its integer
    graph, and ONNX Runtime's QDQ model, calibrated on the same inputs."""
    import torch

    from .models import create_model
    from .peer_models import write_onnx, write_tflite
    from .pipeline import CompileRequest, compile_model

    folder.mkdir(parents=True, exist_ok=True)
    model = create_model(alpha=alpha, seed=0)
    x = np.random.default_rng(0).standard_normal((1, 3, resolution, resolution)).astype("float32")
    np.save(folder / "x.npy", x)
    np.save(folder / "ref.npy", model(torch.from_numpy(x)).detach().numpy())
    (folder / "config.json").write_text(json.dumps({"alpha": alpha, "resolution": resolution, "seed": 0}))
    write_onnx(model, x.shape, folder / "model.onnx")
    write_tflite(model, resolution, folder / "model.tflite")
    request = CompileRequest(alpha=alpha, resolution=resolution, output=str(folder / "artifact"), force=True, tuned=tuned,
                             records=records)  # fmt: skip
    compile_model(request, log=log)
    if int8:
        from .calibration import calibration_inputs
        from .peer_models import write_onnx_qdq, write_tflite_int8
        from .pipeline import integer_model

        write_onnx_qdq(folder / "model.onnx", folder / "model_int8.onnx", calibration_inputs(None, x.shape)[0])
        request = CompileRequest(alpha=alpha, resolution=resolution, output=str(folder / "artifact_int8"), force=True,
                                 tuned=tuned, quantize="int8")  # fmt: skip
        compile_model(request, log=log)
        write_tflite_int8(integer_model(request), folder / "model_int8.tflite")


def measure_alone(runtime: str, folder: Path, runs: int, threads: int) -> dict:
    """One `python -m mnet_compile.bench RUNTIME DIR RUNS THREADS` process (the folder holds x.npy and the
    model files): {"times": [ms, ...], "output": [...]}, or {"error": its last stderr line}."""
    env = dict(os.environ, TVM_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    proc = subprocess.run(
        [sys.executable, "-m", "mnet_compile.bench", runtime, str(folder), str(runs), str(threads)],
        capture_output=True, text=True, env=env,
    )
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        return {"error": lines[-1] if lines else f"exit {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def artifact_folder(workdir, alpha: float, resolution: int) -> Path:
    """Where the bench keeps a config's model files (our artifact in its `artifact/`)."""
    return Path(workdir).absolute() / f"{alpha}-{resolution}"


def run_benchmark(configs, peers=PEERS, rounds=3, runs=50, threads=2, workdir=BENCH_DIR, tuned=True, log=print,
                  records=None):
    """Measure every (config, runtime) in interleaved rounds; return the result rows and the FMA peak.
    `records`: a tuning folder our build uses instead of the shipped records."""
    from .models.cost import cost_report

    workdir = Path(workdir).absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    folders = {}
    for alpha, resolution in configs:
        folders[(alpha, resolution)] = artifact_folder(workdir, alpha, resolution)
        log(f"preparing {alpha}-{resolution}")
        int8 = any(p in INT8_PEERS for p in peers)
        prepare(alpha, resolution, folders[(alpha, resolution)], tuned, log=lambda message: None, int8=int8, records=records)
    peaks = [fma_peak_gflops(threads)]
    samples = {(c, p): [] for c in configs for p in peers}
    outputs, errors = {}, {}
    for r in range(rounds):
        for config in configs:
            for peer in peers:
                if (config, peer) in errors:
                    continue
                result = measure_alone(peer, folders[config], runs, threads)
                if "error" in result:
                    errors[(config, peer)] = result["error"]
                    continue
                samples[(config, peer)] += result["times"]
                outputs[(config, peer)] = np.array(result["output"], dtype=np.float32)
        peaks.append(fma_peak_gflops(threads))  # the best of several: the machine drifts
        log(f"round {r + 1}/{rounds} done")
    peak = max((p for p in peaks if p), default=None)
    rows = []
    for config in configs:
        alpha, resolution = config
        ref = np.load(folders[config] / "ref.npy")
        flops = 2 * cost_report(alpha, resolution)["totals"]["mult_adds"]
        ours = np.median(samples[(config, "mnet-compile")]) if samples[(config, "mnet-compile")] else None
        for peer in peers:
            row = {"config": f"{alpha}-{resolution}", "runtime": peer}
            if (config, peer) in errors:
                row["error"] = errors[(config, peer)]
            else:
                times = np.array(samples[(config, peer)])
                diff = float(np.abs(outputs[(config, peer)] - ref).max())
                same_top1 = bool(outputs[(config, peer)].argmax() == ref.argmax())
                row.update(
                    median_ms=float(np.median(times)),
                    p90_ms=float(np.percentile(times, 90)),
                    ratio_to_ours=float(np.median(times) / ours) if ours else None,
                    gflops=flops / np.median(times) / 1e6,
                    max_abs_diff=diff,
                    matches_pytorch=bool(diff <= 1e-4 * np.abs(ref).max() and same_top1),
                )
                if peer in INT8_PEERS:
                    row.update(int8=True, same_top1=same_top1, relative_error=diff / float(np.abs(ref).max()))
                if peak:
                    row["share_of_peak"] = row["gflops"] / peak
            rows.append(row)
    return rows, peak


def format_results(rows, peak, threads) -> str:
    lines = [
        f"batch 1, fp32 (int8 rows: *-int8), {threads} threads; each runtime in its own process, rounds interleaved",
        f"CPU: {cpu_description()}",
        f"fp32 FMA peak measured now (widest vectors): {peak:.0f} GFLOP/s" if peak else "FMA peak: not measured (needs gcc and AVX2)",
        f"{'config':9} {'runtime':17} {'median ms':>10} {'p90 ms':>8} {'peer/ours':>9} {'GFLOP/s':>8} {'peak':>6}  check",
    ]
    for row in rows:
        if "error" in row:
            lines.append(f"{row['config']:9} {row['runtime']:17} unavailable: {row['error'][:80]}")
            continue
        share = f"{100 * row['share_of_peak']:5.1f}%" if "share_of_peak" in row else "     -"
        check = "ok" if row["matches_pytorch"] else f"MISMATCH (max diff {row['max_abs_diff']:.2e})"
        if row.get("int8"):
            top1 = "same top-1" if row["same_top1"] else "TOP-1 DIFFERS"
            check = f"int8: {top1}, max diff {100 * row['relative_error']:.1f}% of max |logit|"
        lines.append(
            f"{row['config']:9} {row['runtime']:17} {row['median_ms']:10.3f} {row['p90_ms']:8.3f} "
            f"{row['ratio_to_ours']:9.2f} {row['gflops']:8.1f} {share}  {check}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    worker(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
