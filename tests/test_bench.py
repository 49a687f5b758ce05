"""The benchmark harness: every peer runs in its own process on the same weights and matches PyTorch."""

import json

from mnet_compile.bench import PEERS, format_results, run_benchmark


def test_every_peer_runs_and_matches_pytorch(tmp_path):
    rows, peak = run_benchmark([(0.25, 64)], PEERS, rounds=1, runs=3, threads=2, workdir=tmp_path, log=lambda m: None)
    assert [row["runtime"] for row in rows] == PEERS
    for row in rows:
        assert "error" not in row, row
        assert row["matches_pytorch"], row  # the TFLite file is written by peer_models: same weights, NHWC
        assert row["median_ms"] > 0 and row["p90_ms"] >= row["median_ms"]
    assert rows[0]["ratio_to_ours"] == 1.0
    json.dumps(rows)  # --json writes them
    text = format_results(rows, peak, 2)
    assert "MISMATCH" not in text and text.count("0.25-64 ") == len(PEERS)
