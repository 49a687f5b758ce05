"""The benchmark harness: every peer runs in its own process on the same weights and matches PyTorch."""

import json

import numpy as np
import pytest

from mnet_compile.bench import PEERS, format_results, run_benchmark


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
    """`--peers mnet-compile,mnet-compile-int8,onnxruntime-int8`: both int8 runtimes run, on models calibrated
    on the same inputs, and keep PyTorch fp32's top-1."""
    peers = ["mnet-compile", "mnet-compile-int8", "onnxruntime-int8"]
    rows, peak = run_benchmark([(0.25, 64)], peers, rounds=1, runs=3, threads=2, workdir=tmp_path, log=lambda m: None)
    assert [row["runtime"] for row in rows] == peers and all("error" not in row for row in rows), rows
    assert all(row["int8"] and row["same_top1"] and row["relative_error"] < 0.1 for row in rows[1:])
    assert "int8: same top-1" in format_results(rows, peak, 2)


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
