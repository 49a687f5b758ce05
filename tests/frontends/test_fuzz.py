"""Fuzzing the model-file importers (slow, `pytest -m slow`): byte flips and truncations of .onnx and .tflite
files through `mnet-compile --from`, each in its own process: a clean one-line error, or an artifact that
matches its own reference runtime on the damaged file, never a crash or an internal error.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from mnet_compile.device import runtime

SEED = 20261128


# ------------------------------------------------------------------------------ slow: model files


def _compile(path: Path, out: Path, timeout: float = 600):
    """`mnet-compile --from path` in its own process (a crash must not take pytest with it)."""
    cmd = [sys.executable, "-m", "mnet_compile.cli", "--from", str(path), "--output", str(out), "--no-tuned"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, "timeout"
    return proc.returncode, proc.stderr


def _damage(data: bytes, rng: random.Random) -> bytes:
    if rng.random() < 0.3:
        return data[: rng.randrange(1, len(data))]
    out = bytearray(data)
    for _ in range(rng.choice([1, 1, 2, 8])):
        # weights make up most of the file: aim half of the flips at the first 4 KB (headers, graph, shapes)
        i = rng.randrange(min(len(out), 4096)) if rng.random() < 0.5 else rng.randrange(len(out))
        out[i] ^= 1 << rng.randrange(8)
    return bytes(out)


def _fuzz_model_file(fmt: str, path: Path, reference, tmp_path: Path, cases: int):
    rng = random.Random(SEED + len(fmt))
    data = path.read_bytes()
    outcomes = Counter()
    for case in range(cases):
        damaged = tmp_path / f"d{case}{path.suffix}"
        damaged.write_bytes(_damage(data, rng))
        out = tmp_path / f"o{case}"
        code, err = _compile(damaged, out)
        lines = err.strip().splitlines() if code is not None else []
        assert code in (0, 1), f"{fmt} case {case}: exit {code}: {err[-1500:]}"
        if code == 1:
            assert lines[-1].startswith("error: ") and sum(line.startswith("error") for line in lines) == 1, err[-1500:]
            assert not out.exists()
            outcomes["clean error"] += 1
            continue
        model = runtime.load(str(out))
        x = np.random.default_rng(case).standard_normal(model.input_shape).astype("float32")
        try:
            ref = reference(damaged, x)
        except Exception:  # the reference runtime refuses the damaged file that we compiled
            outcomes["compiled, reference refuses"] += 1
            continue
        got = model(x)
        np.testing.assert_allclose(got, ref.reshape(got.shape), rtol=1e-3, atol=1e-4 * (np.nanmax(np.abs(ref)) + 1e-6),
                                   equal_nan=True, err_msg=f"{fmt} case {case}")
        outcomes["compiled, matches reference"] += 1
        shutil.rmtree(out)
    print(f"\n{fmt} fuzz: {cases} damaged files: {dict(outcomes)}")
    return outcomes


@pytest.mark.slow
def test_fuzz_onnx_files(tmp_path):
    import onnxruntime as ort

    from mnet_compile.models import create_model
    from mnet_compile.peer_models import write_onnx

    path = tmp_path / "v1.onnx"
    write_onnx(create_model(alpha=0.25, seed=1), (1, 3, 32, 32), path)

    def reference(file, x):
        session = ort.InferenceSession(str(file), providers=["CPUExecutionProvider"])
        return session.run(None, {session.get_inputs()[0].name: x})[0]

    outcomes = _fuzz_model_file("onnx", path, reference, tmp_path, cases=24)
    assert sum(outcomes.values()) == 24


@pytest.mark.slow
def test_fuzz_tflite_files(tmp_path):
    pytest.importorskip("ai_edge_litert")
    from ai_edge_litert.interpreter import Interpreter

    from mnet_compile.models import create_model
    from mnet_compile.peer_models import write_tflite

    path = tmp_path / "v1.tflite"
    write_tflite(create_model(alpha=0.25, seed=1), 32, path)

    def reference(file, x):
        interpreter = Interpreter(model_path=str(file))
        interpreter.allocate_tensors()
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
        interpreter.invoke()
        return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])

    outcomes = _fuzz_model_file("tflite", path, reference, tmp_path, cases=24)
    assert sum(outcomes.values()) == 24
