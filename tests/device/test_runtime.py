"""The device loader: checksums, architecture, inputs, and a runtime-only process without torch or click."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from mnet_compile.device import runtime


@pytest.fixture
def artifact_copy(compiled, tmp_path):
    dst = tmp_path / "art"
    shutil.copytree(compiled(0.25, 128, seed=7), dst)
    return dst


def test_tampered_library_is_refused(artifact_copy):
    with open(artifact_copy / "model.so", "r+b") as f:
        f.seek(1000)
        f.write(b"\x90\x90")
    with pytest.raises(runtime.ArtifactError, match="altered"):
        runtime.load(str(artifact_copy))


def test_missing_files_are_refused(artifact_copy, tmp_path):
    (artifact_copy / "model.so").unlink()
    with pytest.raises(runtime.ArtifactError, match="missing"):
        runtime.load(str(artifact_copy))
    (artifact_copy / "manifest.json").unlink()
    with pytest.raises(runtime.ArtifactError, match="manifest.json is missing"):
        runtime.load(str(artifact_copy))
    with pytest.raises(runtime.ArtifactError, match="not found"):
        runtime.load(str(tmp_path / "nowhere"))


def test_other_architecture_is_refused_before_dlopen(artifact_copy):
    """An AArch64 model.so must not reach dlopen here: a library that no dlopen could load (with its checksum
    and size updated) shows that the architecture is checked first."""
    (artifact_copy / "model.so").write_bytes(b"\x7fELF not a library any dlopen would load")
    manifest = json.loads((artifact_copy / "manifest.json").read_text())
    manifest["target"]["arch"] = "aarch64"
    manifest["files"]["model.so"]["sha256"] = runtime.sha256(artifact_copy / "model.so")
    manifest["files"]["model.so"]["bytes"] = (artifact_copy / "model.so").stat().st_size
    (artifact_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(runtime.ArtifactError, match="built for aarch64 \\(x86\\), this machine is x86_64"):
        runtime.load(str(artifact_copy))


def test_input_checks_and_helpers(artifact_copy):
    model = runtime.load(str(artifact_copy))
    x = np.zeros((1, 3, 128, 128), "float32")
    with pytest.raises(runtime.ArtifactError, match="shape"):
        model(np.zeros((1, 3, 64, 64), "float32"))
    with pytest.raises(runtime.ArtifactError, match="dtype"):
        model(x.astype("float16"))
    top = model.classify(x, k=5)
    logits = model(x)[0]
    assert [i for i, _ in top] == list(np.argsort(-logits, kind="stable")[:5])
    assert abs(sum(p for _, p in model.classify(x, k=1000)) - 1) < 1e-6


def test_calls_reuse_one_aligned_input_buffer(artifact_copy):
    """Each call copies its input into one 64-byte aligned buffer made at load (no tensor allocated per call):
    consecutive calls on different inputs give what separate loads give, and an output already returned
    does not change when the next call runs."""
    model = runtime.load(str(artifact_copy))
    assert model._staging is not None and model._staging.ctypes.data % 64 == 0
    staging = model._staging.ctypes.data
    rng = np.random.default_rng(3)
    xs = [rng.standard_normal((1, 3, 128, 128)).astype("float32") for _ in range(3)]
    outs = [model(x) for x in xs]
    kept = [o.copy() for o in outs]
    assert model._staging.ctypes.data == staging and np.array_equal(model._staging, xs[-1])
    for x, out, before in zip(xs, outs, kept):
        np.testing.assert_array_equal(out, before)
        np.testing.assert_array_equal(out, runtime.load(str(artifact_copy))(x))
    assert not np.array_equal(outs[0], outs[1])


def test_input_stage_takes_inputs_at_any_alignment(artifact_copy):
    """The artifact's input stage (export/input_stage.py) copies the input in itself: the logits numpy's
    copy gives, for inputs at any alignment; a read-only input (DLPack cannot export it) goes numpy's way."""
    model = runtime.load(str(artifact_copy))
    assert model._stage is not None
    x = np.random.default_rng(5).standard_normal((1, 3, 128, 128)).astype("float32")
    expected = model(x)
    through_numpy = runtime.load(str(artifact_copy))
    through_numpy._stage = None
    np.testing.assert_array_equal(through_numpy(x), expected)
    memory = np.empty(x.size + 16, "float32")
    for offset in (1, 2, 3, 5):
        unaligned = memory[offset : offset + x.size].reshape(x.shape)
        unaligned[...] = x
        assert unaligned.ctypes.data % 64
        np.testing.assert_array_equal(model(unaligned), expected)
    read_only = x.copy()
    read_only.flags.writeable = False
    np.testing.assert_array_equal(model(read_only), expected)
    y = x.copy()
    y[0, 0, 0, 0], y[0, 2, 127, 127], y[0, 1, 64, 3] = np.nan, np.inf, -np.inf
    assert model._stage(y.reshape(-1)) == 3


def test_output_leaves_device_memory_through_numpy():
    """An output numpy cannot import (a GPU tensor's DLPack) is copied out by the tensor itself."""

    class GpuTensor:
        def __dlpack__(self, **_):
            raise BufferError("Unsupported device in DLTensor")

        def __dlpack_device__(self):
            return (2, 0)

        def numpy(self):
            return np.ones((1, 10), "float32")

    np.testing.assert_array_equal(runtime.CompiledModel._output([GpuTensor()]), np.ones((1, 10), "float32"))


def test_benchmark_statistics(artifact_copy, monkeypatch):
    """Warm-up runs are left out; median, p90 and min are of the timed runs (a fake clock makes them known)."""
    model = runtime.load(str(artifact_copy))
    ticks = [0.0, 0.0]  # the two warm-up runs read the clock once each
    for second, ms in enumerate([4.0, 1.0, 3.0, 2.0, 5.0], 1):  # each timed run reads it before and after
        ticks += [second, second + ms / 1e3]
    monkeypatch.setattr(runtime.time, "perf_counter", iter(ticks).__next__)
    timing = model.benchmark(repeat=5, warmup=2)
    assert timing == {"median_ms": pytest.approx(3.0), "p90_ms": pytest.approx(4.6), "min_ms": pytest.approx(1.0), "runs": 5}


def test_loader_runs_with_runtime_only(artifact_copy, tmp_path):
    """The loader file alone, TVM_USE_RUNTIME_LIB=1, torch and click unimportable: same logits."""
    x = np.random.default_rng(3).standard_normal((1, 3, 128, 128)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    expected = runtime.load(str(artifact_copy))(x)
    shutil.copy(runtime.__file__, tmp_path / "loader.py")
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["torch"] = None  # any import of these now fails
        sys.modules["click"] = None
        sys.modules["mnet_compile"] = None
        import numpy as np, loader
        model = loader.load({str(artifact_copy)!r})
        assert model._stage is not None, "no input stage"
        out = model(np.load({str(tmp_path / "x.npy")!r}))
        np.save({str(tmp_path / "y.npy")!r}, out)
        maps = open("/proc/self/maps").read()
        assert "libtvm_runtime" in maps and "/libtvm.so" not in maps, "compiler library loaded"
        assert "tvm.relax" not in sys.modules
        """
    )
    env = {"TVM_USE_RUNTIME_LIB": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), expected)


def test_physical_cores_counts_hyper_threads_once(tmp_path):
    for cpu, siblings in enumerate(["0,2", "1,3", "0,2", "1,3"]):  # 2 cores x 2 hyper-threads
        (tmp_path / f"cpu{cpu}" / "topology").mkdir(parents=True)
        (tmp_path / f"cpu{cpu}" / "topology" / "thread_siblings_list").write_text(siblings + "\n")
    assert runtime.physical_cores([0, 1, 2, 3], sysfs=str(tmp_path)) == 2
    assert runtime.physical_cores([0, 1], sysfs=str(tmp_path)) == 2
    assert runtime.physical_cores([0, 2], sysfs=str(tmp_path)) == 1
    assert runtime.physical_cores([0, 7], sysfs=str(tmp_path)) is None  # the kernel does not say: TVM decides


def test_load_gives_the_thread_pool_every_physical_core(artifact_copy, tmp_path):
    """TVM's own default halves the logical CPUs on x86; the loader sizes the pool to the cores, unless
    the user's TVM_NUM_THREADS / OMP_NUM_THREADS says otherwise."""
    script = textwrap.dedent(
        f"""
        import tvm_ffi
        from mnet_compile.device import runtime
        runtime.load({str(artifact_copy)!r})
        print(tvm_ffi.get_global_func("runtime.NumThreads")())
        """
    )
    env = {k: v for k, v in os.environ.items() if k not in ("TVM_NUM_THREADS", "OMP_NUM_THREADS")}

    def threads(**extra):
        proc = subprocess.run([sys.executable, "-c", script], env=dict(env, **extra), capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return int(proc.stdout.split()[-1])

    assert threads() == runtime.physical_cores()
    assert threads(TVM_NUM_THREADS="1") == 1
    assert threads(OMP_NUM_THREADS="1") == 1
