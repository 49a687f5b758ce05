"""Bad input through the CLI: one line on stderr, a non-zero exit, nothing half-written."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from mnet_compile.cli import main
from mnet_compile.model import build_model


def run_cli(capsys, *args):
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


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
    ],
)
def test_bad_compile_arguments(capsys, tmp_path, args, message):
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, *args, "--output", str(out))
    assert code != 0
    assert message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_bad_weights_files(capsys, tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    wrong_alpha = tmp_path / "alpha05.pt"
    torch.save(build_model(0.5).state_dict(), wrong_alpha)
    cases = [
        (tmp_path / "missing.pt", "weights file not found"),
        (garbage, "cannot read weights file"),
        (wrong_alpha, "does not fit MobileNet v1 alpha=0.25"),
    ]
    for path, message in cases:
        out = tmp_path / "out"
        code, _, err = run_cli(capsys, "--alpha", "0.25", "--resolution", "64", "--weights", str(path), "--output", str(out))
        assert code == 1 and message in err and len(err.strip().splitlines()) == 1, err
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
    code, _, err = run_cli(capsys, "--alpha", "0.25", "--output", str(target))
    assert code == 1 and ("cannot create output folder" in err or "not writable" in err), err


def test_existing_output_needs_force(capsys, compiled, tmp_path):
    out = tmp_path / "existing"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    code, _, err = run_cli(capsys, "--alpha", "0.25", "--resolution", "64", "--output", str(out))
    assert code == 1 and "--force" in err
    assert (out / "keep.txt").read_text() == "user data"
    code, stdout, _ = run_cli(capsys, "--alpha", "0.25", "--resolution", "64", "--output", str(out), "--force")
    assert code == 0 and stdout.strip() == str(out)
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.so"]
    assert [p.name for p in tmp_path.iterdir()] == ["existing"], "temporary or backup folder left behind"


def test_run_and_bad_inputs(capsys, compiled, tmp_path):
    art = str(compiled(0.25, 128, seed=7))
    x = np.random.default_rng(0).standard_normal((1, 3, 128, 128)).astype("float32")
    good = tmp_path / "x.npy"
    np.save(good, x)
    code, out, _ = run_cli(capsys, "run", art, "--input", str(good), "--repeat", "3")
    assert code == 0 and out.count("class") == 5 and "latency: median" in out
    for array, message in [
        (x[:, :, :64], "input must have shape (1, 3, 128, 128)"),
        (x.astype("float64"), "input must have dtype float32"),
    ]:
        np.save(tmp_path / "bad.npy", array)
        code, _, err = run_cli(capsys, "run", art, "--input", str(tmp_path / "bad.npy"))
        assert code == 1 and message in err and len(err.strip().splitlines()) == 1
    (tmp_path / "junk.npy").write_bytes(b"junk")
    code, _, err = run_cli(capsys, "run", art, "--input", str(tmp_path / "junk.npy"))
    assert code == 1 and "cannot read input" in err


def test_info(capsys):
    code, out, _ = run_cli(capsys, "info", "--alpha", "0.25", "--resolution", "224")
    assert code == 0 and "41" in out
    code, _, err = run_cli(capsys, "info", "--alpha", "2")
    assert code == 1 and "alpha must be in (0, 1]" in err


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
    code, _, err = run_cli(capsys, "tune", "--target", "arm_cpu", "--work-dir", str(tmp_path / "w"))
    assert code == 1 and "cannot be tuned here" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(capsys, "tune", "--trials", "0", "--work-dir", str(tmp_path / "w"))
    assert code == 1 and "--trials must be a positive integer" in err


def test_tune_then_compile_with_records(capsys, tmp_path):
    """`tune` writes records, a rerun resumes them, and `--records` applies them to a build that still matches."""
    work = tmp_path / "records"
    args = ["tune", "--alpha", "0.25", "--resolution", "32", "--work-dir", str(work)]
    assert run_cli(capsys, *args, "--trials", "3")[0] == 0
    first = (work / "database_tuning_record.json").read_text().count("\n")
    assert run_cli(capsys, *args, "--trials", "6")[0] == 0
    assert (work / "database_tuning_record.json").read_text().count("\n") > first >= 3
    out = tmp_path / "art"
    code, _, err = run_cli(capsys, "--alpha", "0.25", "--resolution", "32", "--records", str(work), "--output", str(out))
    import json

    applied = json.loads((out / "manifest.json").read_text())["schedules"]["tuned"]
    assert code == 0 and applied > 0 and f"tuned records applied to {applied} of" in err
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype("float32")
    from mnet_compile import runtime

    ref = build_model(0.25)(torch.from_numpy(x)).detach().numpy()
    assert np.abs(runtime.load(str(out))(x) - ref).max() <= 1e-4 * np.abs(ref).max()


@pytest.mark.parametrize(
    "args",
    [
        ["run", "anywhere", "--repeat", "0"],
        ["bench", "--rounds", "0"],
        ["bench", "--runs", "-1"],
        ["bench", "--threads", "0"],
        ["--no-such-option"],
    ],
)
def test_bad_usage_is_one_line(capsys, args):
    code, _, err = run_cli(capsys, *args)
    assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
