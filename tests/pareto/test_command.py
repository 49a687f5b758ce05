"""`mnet-compile pareto`: errors as one line, the table and the choice, the cache across budgets, and real runs
(here, and through a loopback RPC tracker and server as tests/schedule/test_remote.py starts them)."""

import json
import re
import sys

import pytest

from mnet_compile.pareto import sweep as sweep_module

from ..helpers import error_line, run_cli
from ..schedule.test_remote import KEY, rpc  # noqa: F401  (rpc: the loopback tracker fixture)


@pytest.fixture
def faked(fake, monkeypatch):
    """The CLI with the fake measurer in place of building and timing."""
    monkeypatch.setattr(sweep_module, "_measurer", lambda opts, preset, log: fake)
    return fake


@pytest.mark.parametrize("args, message", [
    (["--budget-ms", "0"], "Invalid value for '--budget-ms'"),
    (["--budget-ms", "-1"], "Invalid value for '--budget-ms'"),
    (["--budget-ms", "fast"], "Invalid value for '--budget-ms'"),
    (["--configs", "1.0-225"], "resolution"),
    (["--configs", "1.0"], "--configs takes ALPHA-RESOLUTION items"),
    (["--configs", "1.5-224"], "alpha"),
    (["--output", "x"], "give --budget-ms too"),
    (["--bundle"], "apply to the folder --output names"),
    (["--target", "rpi4"], "time it on the board with --rpc"),
    (["--key", "k"], "give the tracker with --rpc"),
    (["--rpc", "nowhere", "--key", "k"], "--rpc must be HOST:PORT"),
    (["--budget-ms", "0.001"], "no configuration runs within 0.001 ms: the fastest, 0.25-128"),
    (["--rpc", "127.0.0.1:9190", "--key", "k", "--threads", "4"], "a board's RPC server runs with its own"),
    (["--no-tuned", "--records", "somewhere"], "give one, not both"),
])
def test_errors_are_one_line(faked, capsys, args, message):
    code, out, err = run_cli(capsys, "pareto", *args)
    assert code != 0 and message in error_line(err), err


def test_existing_output_fails_before_measuring(faked, capsys, tmp_path):
    (tmp_path / "best").mkdir()
    code, out, err = run_cli(capsys, "pareto", "--budget-ms", "2", "--output", tmp_path / "best")
    assert code == 1 and "already exists; pass --force" in error_line(err) and faked.calls == []


def test_table_choice_and_cache_across_budgets(faked, capsys, tmp_path):
    code, out, err = run_cli(capsys, "pareto", "--budget-ms", "2", "--json", tmp_path / "r.json")
    assert code == 0, err
    assert "measured now: 1.0-224, " in out and "from the cache" in out
    assert out.count(" yes ") == len(json.loads((tmp_path / "r.json").read_text())["front"])
    first_choice = [line for line in out.splitlines() if line.startswith("within 2 ms: ")]
    assert len(first_choice) == 1 and "measured)" in first_choice[0]
    for budget in ("0.5", "1", "5"):
        code, out, err = run_cli(capsys, "pareto", "--budget-ms", budget)
        assert code == 0 and "measured now: none;" in out and f"within {budget} ms: " in out, err
    assert len(faked.calls) == 1


def test_predict_says_it_estimates(faked, capsys):
    code, out, err = run_cli(capsys, "pareto", "--predict", "--budget-ms", "3")
    assert code == 0, err
    assert "ESTIMATES" in out and len(re.findall(r" ~\d", out)) == 11
    assert faked.calls == [sweep_module.PREDICT_MEASURED]


def test_without_matplotlib_the_table_then_one_line(faked, capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    code, out, err = run_cli(capsys, "pareto", "--plot", tmp_path / "p.png")
    assert code == 1 and "0.25-128" in out
    assert error_line(err) == "error: the plot needs matplotlib: pip install 'mnet-compile[plot]'"


def test_measured_here_then_chosen_and_compiled(capsys, tmp_path, monkeypatch):
    """A real run: built and timed in its own process, chosen, compiled to --output; the rerun measures nothing."""
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(capsys, "pareto", "--configs", "0.25-128", "--rounds", "1", "--runs", "3",
                             "--budget-ms", "1000", "--output", tmp_path / "best", "--json", tmp_path / "r.json")
    assert code == 0, err
    (row,) = json.loads((tmp_path / "r.json").read_text())["rows"]
    assert row["latency_ms"] > 0 and row["p90_ms"] >= row["latency_ms"] and row["top1"] == 41.5 and row["on_front"]
    schedules = json.loads((tmp_path / "artifacts" / "pareto" / "x86" / "0.25-128" / "artifact" / "manifest.json").read_text())["schedules"]
    assert row["records"] == f"{schedules['tuned']}/{schedules['kernels']}" and schedules["tuned"] > 0  # shipped records
    assert "within 1000 ms: 0.25-128 (41.5% top-1, TF-slim table;" in out
    manifest = json.loads((tmp_path / "best" / "manifest.json").read_text())
    assert (manifest["alpha"], manifest["resolution"]) == (0.25, 128)
    code, out, err = run_cli(capsys, "pareto", "--configs", "0.25-128", "--rounds", "1", "--runs", "3", "--budget-ms", "1e-6")
    assert code == 1 and "measured now: none;" in out and "compiling" not in err
    assert error_line(err).startswith("error: no configuration runs within 1e-06 ms: the fastest, 0.25-128, takes")


@pytest.mark.slow  # ~40 s: a tracker and a server start, a test kernel and the model are compiled
def test_measured_through_rpc(rpc, capsys, tmp_path, monkeypatch):  # noqa: F811
    """Timed by a loopback RPC server: the model uploaded per session, the VM's time_evaluator on the device."""
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(capsys, "pareto", "--configs", "0.25-32", "--rpc", rpc, "--key", KEY,
                             "--rounds", "2", "--runs", "3", "--json", tmp_path / "r.json")
    assert code == 0, err
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["context"]["where"] == f"RPC key {KEY}" and result["context"]["threads"] is None
    (row,) = result["rows"]
    assert row["latency_ms"] > 0 and row["top1"] is None and row["records"]  # no published accuracy at 32
    assert "round 2/2 done" in err and f"on RPC key {KEY}" in out
