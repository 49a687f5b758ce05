"""The sweep with a fake measurer: the cache (a rerun measures nothing), --remeasure, --predict's anchors."""

import json
import shutil

import pytest

from mnet_compile.errors import MnetError
from mnet_compile.pareto import PAPER_CONFIGS
from mnet_compile.pareto.predict import PREDICT_MEASURED
from mnet_compile.pareto.sweep import SweepOptions, parse_configs, sweep

QUIET = dict(log=lambda message: None)


def test_second_run_measures_nothing(fake, private_cache):
    first = sweep(SweepOptions(), measurer=fake, **QUIET)
    assert fake.calls == [list(PAPER_CONFIGS)] and len(first["measured"]) == 16
    again = sweep(SweepOptions(), measurer=fake, **QUIET)
    assert len(fake.calls) == 1 and again["measured"] == [] and len(again["cached"]) == 16
    assert [r["latency_ms"] for r in again["rows"]] == [r["latency_ms"] for r in first["rows"]]
    entries = json.loads((private_cache / "pareto" / "x86.json").read_text())["entries"]
    key = json.loads(entries[0]["key"])
    assert {"target", "tvm_target", "where", "schedules", "threads", "versions", "config"} <= set(key)
    assert {"apache-tvm", "apache-tvm-ffi", "mnet-compile", "compiler"} <= set(key["versions"])


def test_what_changes_the_measurement_measures_again(fake):
    configs = [(0.25, 128), (0.5, 160)]
    sweep(SweepOptions(configs=configs), measurer=fake, **QUIET)
    sweep(SweepOptions(configs=configs + [(1.0, 224)]), measurer=fake, **QUIET)  # only the new one
    sweep(SweepOptions(configs=configs, threads=1), measurer=fake, **QUIET)
    sweep(SweepOptions(configs=configs, tuned=False), measurer=fake, **QUIET)
    sweep(SweepOptions(configs=configs, remeasure=True), measurer=fake, **QUIET)
    assert fake.calls == [configs, [(1.0, 224)], configs, configs, configs]


def test_a_changed_compiler_measures_again(fake, monkeypatch, tmp_path):
    """Another default schedule or re-tuned records build other code: the cache must not answer for it."""
    from mnet_compile.pareto import timing

    sweep(SweepOptions(configs=[(0.25, 128)]), measurer=fake, **QUIET)
    before = timing.compiler_fingerprint()
    shutil.copytree(timing.data_dir("schedules"), tmp_path / "schedules")
    monkeypatch.setattr(timing, "data_dir", lambda name: tmp_path / name)
    assert timing.compiler_fingerprint() == before  # a copy of the same records
    records = sorted((tmp_path / "schedules").rglob("*.json.gz"))[0]
    records.write_bytes(records.read_bytes() + b"\0")  # one record file changed
    assert timing.compiler_fingerprint() != before
    sweep(SweepOptions(configs=[(0.25, 128)]), measurer=fake, **QUIET)
    assert len(fake.calls) == 2


def test_a_damaged_cache_is_measured_again(fake, private_cache):
    sweep(SweepOptions(configs=[(0.25, 128)]), measurer=fake, **QUIET)
    (private_cache / "pareto" / "x86.json").write_text("{not json")
    sweep(SweepOptions(configs=[(0.25, 128)]), measurer=fake, **QUIET)
    assert len(fake.calls) == 2
    assert json.loads((private_cache / "pareto" / "x86.json").read_text())["entries"]


def test_rows_join_cost_accuracy_and_front(fake):
    result = sweep(SweepOptions(configs=[(1.0, 224), (0.25, 128), (0.3, 224)]), measurer=fake, **QUIET)
    rows = {r["config"]: r for r in result["rows"]}
    assert rows["1.0-224"]["mult_adds"] == 568_740_352 and rows["1.0-224"]["top1"] == 70.6
    assert rows["0.3-224"]["top1"] is None and not rows["0.3-224"]["on_front"] and "no published" in rows["0.3-224"]["note"]
    assert result["front"] == ["0.25-128", "1.0-224"] and rows["1.0-224"]["on_front"]
    assert not any(r["estimated"] for r in rows.values())


def test_predict_measures_only_the_anchors(fake):
    result = sweep(SweepOptions(predict=True), measurer=fake, **QUIET)
    assert fake.calls == [PREDICT_MEASURED]
    estimated = {r["config"] for r in result["rows"] if r["estimated"]}
    assert len(estimated) == 16 - len(PREDICT_MEASURED) and "1.0-224" not in estimated
    for row in result["rows"]:  # the fake's latency is linear in the mult-adds: the fit reproduces it
        assert row["latency_ms"] == pytest.approx(0.1 + 0.01 * row["mult_adds"] / 1e6, rel=1e-6)


@pytest.mark.parametrize("text, message", [
    ("1.0", "ALPHA-RESOLUTION"), ("x-224", "alpha"), ("1.0-225", "resolution"), ("2.0-224", "alpha"), ("", "ALPHA-RESOLUTION"),
])
def test_bad_configs(text, message):
    with pytest.raises(MnetError, match=message):
        parse_configs(text)


def test_configs_parse_and_dedupe():
    assert parse_configs("1.0-224, 0.25-128,1.0-224") == [(1.0, 224), (0.25, 128)]


def test_a_board_needs_rpc(fake):
    with pytest.raises(MnetError, match="does not run on this .* machine: time it on the board with --rpc"):
        sweep(SweepOptions(target="rpi4"), measurer=fake, **QUIET)
    with pytest.raises(MnetError, match="give the tracker with --rpc"):
        sweep(SweepOptions(key="rpi4"), measurer=fake, **QUIET)
    assert fake.calls == []
