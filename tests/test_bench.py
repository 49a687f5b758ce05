"""The benchmark harness: every peer runs in its own process on the same weights and matches PyTorch."""

import json
import time

import numpy as np
import pytest

from mnet_compile.bench import PEERS, _time, format_results, run_benchmark


def test_every_peer_runs_and_matches_pytorch(tmp_path):
    rows, peak = run_benchmark([(0.25, 64)], PEERS, rounds=1, runs=3, threads=2, workdir=tmp_path, log=lambda m: None)
    assert [row["runtime"] for row in rows] == PEERS
    ours = rows[0]["median_ms"]
    ref = np.load(tmp_path / "0.25-64" / "ref.npy")
    for row in rows:
        assert "error" not in row, row
        assert row["matches_pytorch"], row  # the TFLite file is written by peer_models: same weights, NHWC
        assert row["max_abs_diff"] <= 1e-4 * np.abs(ref).max()
        assert row["ratio_to_ours"] == pytest.approx(row["median_ms"] / ours)
        assert row["gflops"] == pytest.approx(2 * 3_584_512 / row["median_ms"] / 1e6)  # 0.25-64: 3.6M mult-adds
    json.dumps(rows)  # --json writes them
    text = format_results(rows, peak, 2)
    assert "MISMATCH" not in text and text.count("0.25-64 ") == len(PEERS)


@pytest.mark.slow
def test_int8_rows(tmp_path):
    """`--peers mnet-compile,mnet-compile-int8,tflite-int8,onnxruntime-int8`: the int8 runtimes run, on models
    calibrated on the same inputs (LiteRT's file from our integer graph), and keep PyTorch fp32's top-1."""
    peers = ["mnet-compile", "mnet-compile-int8", "tflite-int8", "onnxruntime-int8"]
    rows, peak = run_benchmark([(0.25, 64)], peers, rounds=1, runs=3, threads=2, workdir=tmp_path, log=lambda m: None)
    assert [row["runtime"] for row in rows] == peers and all("error" not in row for row in rows), rows
    assert all(row["int8"] and row["same_top1"] and row["relative_error"] < 0.1 for row in rows[1:])
    assert "int8: same top-1" in format_results(rows, peak, 2)


def test_litert_int8_peer_runs_the_int8_tflite(tmp_path):
    """The `tflite-int8` worker, in its own process: LiteRT on model_int8.tflite (written by bench.prepare from
    our int8 model), NCHW input transposed; its logits are our integer graph's, dequantized."""
    from mnet_compile.bench import INT8_PEERS, measure_alone
    from mnet_compile.peer_models import write_tflite_int8
    from mnet_compile.pipeline import CompileRequest, integer_model

    from .int8_reference import integer_reference

    assert "tflite-int8" in INT8_PEERS
    model = integer_model(CompileRequest(alpha=0.25, resolution=32, quantize="int8"))
    write_tflite_int8(model, tmp_path / "model_int8.tflite")
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    result = measure_alone("tflite-int8", tmp_path, runs=2, threads=1)
    assert "error" not in result and len(result["times"]) == 2, result
    levels = integer_reference(model, x, requantize="float").astype(np.float32)
    expected = (levels - np.float32(model.output_zero_point)) * np.float32(model.output_scale)
    np.testing.assert_allclose(np.array(result["output"], np.float32), expected, rtol=0, atol=1e-6)


def test_records_reach_our_build(tmp_path, capsys):
    """`bench --records DIR` builds ours with that tuning folder (an empty one is refused by the build);
    with --no-tuned it is refused before anything is built."""
    from mnet_compile.errors import MnetError

    from .helpers import error_line, run_cli

    empty = tmp_path / "no-records"
    empty.mkdir()
    with pytest.raises(MnetError, match="no tuning records in"):
        run_benchmark([(0.25, 32)], ["mnet-compile"], rounds=1, runs=1, workdir=tmp_path, log=lambda m: None, records=str(empty))
    code, _, err = run_cli(capsys, "bench", "--configs", "0.25-32", "--records", empty, "--no-tuned")
    assert code != 0 and "give one, not both" in error_line(err)


def test_every_runtime_warms_up_for_a_minimum_time():
    """Timing starts after at least `warmup_s` of calls (a few calls leave a small model far from steady state)."""
    calls = []

    def run(x):
        calls.append(time.perf_counter())
        time.sleep(0.002)
        return x

    times, _ = _time(run, np.zeros(2), runs=4, warmup_s=0.1)
    assert len(times) == 4 and calls[-4] - calls[0] >= 0.1
