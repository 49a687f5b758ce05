"""The command line: one-line errors and non-zero exits for bad input, nothing half-written, no ignored options."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from mnet_compile.device import runtime
from mnet_compile.models import create_model
from mnet_compile.models.cost import cost_report, format_cost_report

from .helpers import assert_matches_pytorch, error_line, random_input, run_cli


@pytest.mark.parametrize(
    "args,message",
    [
        (["--alpha", "abc"], "alpha must be a number"),
        (["--alpha", "0"], "alpha must be in (0, 1]"),
        (["--alpha", "1.5"], "alpha must be in (0, 1]"),
        (["--alpha", "-0.5"], "alpha must be in (0, 1]"),
        (["--resolution", "100"], "resolution must be a multiple of 32"),
        (["--resolution", "2048"], "resolution must be a multiple of 32"),
        (["--resolution", "big"], "resolution must be a multiple of 32"),
        (["--classes", "0"], "classes must be a positive integer"),
        (["--target", "pdp11"], "unknown target 'pdp11'; known targets: "),
        (["--target", "boards/none.json"], "target preset file boards/none.json not found"),
        (["--weights", "w.pt", "--seed", "3"], "--seed draws random weights, --weights loads them"),
        (["--records", "r", "--no-tuned"], "--records applies tuned records, --no-tuned builds without any"),
        (["compile", "--alpha", "2"], "alpha must be in (0, 1]"),
        (["--model", "mobilenet_v4"], "unknown model 'mobilenet_v4'; known models: mobilenet_v1, mobilenet_v2"),
        (["--calibration", "images"], "--calibration applies to --quantize int8"),
        (["--quantize", "int8", "--from", "m.onnx"], "--quantize applies to the built-in models"),
        (["--quantize", "int8", "--calibration", "no/such/folder"], "calibration folder not found: no/such/folder"),
        (["--quantize", "int8", "--target", "cuda"], "--quantize int8 builds for CPU targets"),
    ],
)
def test_bad_compile_arguments(capsys, tmp_path, args, message):
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, *args, "--output", out)
    assert code == 1 and message in error_line(err) and not out.exists()


@pytest.mark.parametrize("command", ["tune", "info", "targets", "run", "bench"])
def test_options_before_a_command_are_refused(capsys, command):
    """`mnet-compile --alpha 0.25 tune` would tune alpha 1.0 if the options were dropped: it refuses instead."""
    code, _, err = run_cli(capsys, "--alpha", "0.25", command)
    assert code == 2 and f"options go after the command: mnet-compile {command}" in error_line(err)


def test_bad_weights_files(capsys, tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    wrong_alpha = tmp_path / "alpha05.pt"
    torch.save(create_model(alpha=0.5).state_dict(), wrong_alpha)
    cases = [
        (tmp_path / "missing.pt", "weights file not found"),
        (garbage, "cannot read weights file"),
        (wrong_alpha, "does not fit MobileNet v1 alpha=0.25"),
    ]
    for path, message in cases:
        out = tmp_path / "out"
        code, _, err = run_cli(capsys, "--alpha", "0.25", "--resolution", "64", "--weights", path, "--output", out)
        assert code == 1 and err.count("\n") == 1 and message in error_line(err), err  # before any progress line
        assert not out.exists()
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")], "temporary folder left behind"


def test_unwritable_output(capsys, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    if os.access(locked, os.W_OK):  # root ignores permissions; use a path under a file instead
        target = tmp_path / "a_file" / "out"
        (tmp_path / "a_file").write_text("x")
    else:
        target = locked / "out"
    code, _, err = run_cli(capsys, "--alpha", "0.25", "--output", target)
    line = error_line(err)
    assert code == 1 and ("cannot create output folder" in line or "not writable" in line), err


def test_existing_output_needs_force(capsys, tmp_path):
    out = tmp_path / "existing"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    code, _, err = run_cli(capsys, "--alpha", "0.25", "--resolution", "64", "--output", out)
    assert code == 1 and "--force" in error_line(err)
    assert (out / "keep.txt").read_text() == "user data"
    code, stdout, _ = run_cli(capsys, "compile", "--alpha", "0.25", "--resolution", "64", "--output", out, "--force")
    assert code == 0 and stdout.strip() == str(out)
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.so"]
    assert [p.name for p in tmp_path.iterdir()] == ["existing"], "temporary or backup folder left behind"


def test_run_and_bad_inputs(capsys, compiled, tmp_path):
    art = compiled(0.25, 128, seed=7)
    x = random_input((1, 3, 128, 128))
    good = tmp_path / "x.npy"
    np.save(good, x)
    code, out, _ = run_cli(capsys, "run", art, "--input", good, "--repeat", "3")
    top = [int(line.split()[2]) for line in out.splitlines() if "class" in line]
    logits = runtime.load(str(art))(x)[0]
    assert code == 0 and top == list(np.argsort(-logits, kind="stable")[:5]) and "latency: median" in out
    for array, message in [
        (x[:, :, :64], "input must have shape (1, 3, 128, 128)"),
        (x.astype("float64"), "input must have dtype float32"),
    ]:
        np.save(tmp_path / "bad.npy", array)
        code, _, err = run_cli(capsys, "run", art, "--input", tmp_path / "bad.npy")
        assert code == 1 and message in error_line(err)
    (tmp_path / "junk.npy").write_bytes(b"junk")
    code, _, err = run_cli(capsys, "run", art, "--input", tmp_path / "junk.npy")
    assert code == 1 and "cannot read input" in error_line(err)


def test_info(capsys):
    code, out, _ = run_cli(capsys, "info", "--alpha", "0.25", "--resolution", "224")
    assert code == 0 and out == format_cost_report(cost_report(0.25, 224)) + "\n"
    assert "total: 41.0M mult-adds, 0.46M params" in out  # the paper's 41M and 0.5M (Table 6)
    code, out, _ = run_cli(capsys, "info", "--alpha", "0.5", "--resolution", "160", "--classes", "10", "--json")
    assert code == 0 and json.loads(out) == cost_report(0.5, 160, 10)
    code, _, err = run_cli(capsys, "info", "--alpha", "2")
    assert code == 1 and "alpha must be in (0, 1]" in error_line(err)


def test_targets_lists_every_preset(capsys):
    from mnet_compile.targets import preset_names

    code, out, _ = run_cli(capsys, "targets")
    lines = out.splitlines()
    assert code == 0 and [line.split()[0] for line in lines] == preset_names()
    assert lines[preset_names().index("rpi4")].split()[1] == "aarch64"


def test_process_exit_without_traceback(tmp_path):
    """The installed entry point: a real process, a one-line error, exit code 1."""
    proc = subprocess.run(
        [sys.executable, "-m", "mnet_compile.cli", "--alpha", "7", "--output", str(tmp_path / "o")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip() == "error: alpha must be in (0, 1], got 7"


def test_default_artifact_name(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, stdout, _ = run_cli(capsys, "--alpha", "1", "--resolution", "32", "--classes", "10")
    assert code == 0 and stdout.strip() == str(tmp_path / "artifacts" / "mobilenet_v1_1.0_32_x86")


def test_tune_bad_input(capsys, tmp_path):
    code, _, err = run_cli(capsys, "tune", "--target", "arm_cpu", "--work-dir", tmp_path / "w")
    assert code == 1 and "cannot be tuned here" in error_line(err)
    code, _, err = run_cli(capsys, "tune", "--trials", "0", "--work-dir", tmp_path / "w")
    assert code == 1 and "--trials must be a positive integer" in error_line(err)
    code, _, err = run_cli(capsys, "tune", "--from", "m.onnx", "--alpha", "0.5", "--work-dir", tmp_path / "w")
    assert code == 1 and "--alpha applies to the built-in models" in error_line(err)
    assert not (tmp_path / "w").exists()


@pytest.mark.slow
def test_tune_then_compile_with_records(capsys, tmp_path):
    """`tune` writes records, a rerun resumes them, and `--records` applies them to a build that still matches."""
    work = tmp_path / "records"
    args = ["tune", "--alpha", "0.25", "--resolution", "32", "--work-dir", work]
    code, out, _ = run_cli(capsys, *args, "--trials", "3")
    assert code == 0 and out.strip() == str(work)
    first = (work / "database_tuning_record.json").read_text().count("\n")  # seeds (default, transferred) count
    assert run_cli(capsys, *args, "--trials", str(first + 3))[0] == 0
    assert (work / "database_tuning_record.json").read_text().count("\n") > first >= 3
    out = tmp_path / "art"
    code, _, err = run_cli(capsys, "--alpha", "0.25", "--resolution", "32", "--records", work, "--output", out)
    applied = json.loads((out / "manifest.json").read_text())["schedules"]["tuned"]
    assert code == 0 and applied > 0 and f"tuned records applied to {applied} of" in err
    x = random_input((1, 3, 32, 32))
    assert_matches_pytorch(runtime.load(str(out))(x), x, alpha=0.25)


@pytest.mark.parametrize(
    "args",
    [
        ["run", "anywhere", "--repeat", "0"],
        ["bench", "--rounds", "0"],
        ["bench", "--runs", "-1"],
        ["bench", "--threads", "0"],
        ["--no-such-option"],
        ["compile", "--alpha", "0.25", "stray"],
    ],
)
def test_bad_usage_is_one_line(capsys, args):
    code, _, err = run_cli(capsys, *args)
    assert code == 2 and error_line(err)
