"""The artifact's own thread pool (export/thread_pool.cc): every task runs, errors reach the caller, and the
loader uses it, from several threads, across fork and unload, with TVM's pool's results."""

import ctypes
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tvm
from tvm.script import tirx as T

from mnet_compile.device import runtime
from mnet_compile.export.thread_pool import POOL_FUNCTION, link_options


@T.prim_func(s_tir=True)
def twice(x: T.Buffer((64,), "float32"), y: T.Buffer((64,), "float32")):
    T.func_attr({"global_symbol": "twice", "tirx.noalias": True})
    for p in T.parallel(8):
        for i in range(8):
            with T.sblock("y"):
                vi = T.axis.spatial(64, p * 8 + i)
                T.Assert(x[vi] >= T.float32(0), "negative input")
                y[vi] = x[vi] * T.float32(2)


def _library(tmp_path):
    """(twice's library with the pool linked in, the address TVM's launch pointer holds in it)."""
    path = str(tmp_path / "twice.so")
    target = tvm.target.Target({"kind": "llvm", "num-cores": 2})
    tvm.compile(tvm.IRModule({"twice": twice}), target).export_library(path, **link_options())
    return tvm.runtime.load_module(path), ctypes.c_void_p.in_dll(ctypes.CDLL(path), "__TVMBackendParallelLaunch")


def test_loader_restates_the_pool_name():
    """runtime.py stands alone on the device: its copy of the name must not drift."""
    assert runtime.POOL_FUNCTION == POOL_FUNCTION


def test_pool_runs_every_task_and_raises_their_errors(tmp_path):
    """Both halves of the parallel loop run; an error in the caller's task or in the worker's is raised to
    the caller (not lost, no crash), and the pool runs the next launch."""
    library, launch = _library(tmp_path)
    tvm_pool = launch.value
    assert library.get_function(POOL_FUNCTION)(2) == 1
    assert launch.value != tvm_pool  # the kernels now launch through the artifact's pool
    x = np.arange(64, dtype="float32")
    y = tvm.runtime.empty((64,), "float32")
    library["twice"](tvm.runtime.tensor(x), y)
    np.testing.assert_array_equal(y.numpy(), 2 * x)
    for bad in (0, 60):  # task 0 (the caller's), task 1 (the worker's)
        xb = x.copy()
        xb[bad] = -1
        with pytest.raises(Exception, match="negative input"):
            library["twice"](tvm.runtime.tensor(xb), y)
    library["twice"](tvm.runtime.tensor(x + 1), y)
    np.testing.assert_array_equal(y.numpy(), 2 * (x + 1))


def test_one_thread_keeps_tvms_pool(tmp_path):
    library, launch = _library(tmp_path)
    tvm_pool = launch.value
    assert library.get_function(POOL_FUNCTION)(1) == 0
    assert launch.value == tvm_pool


LOADER_SCRIPT = """
import ctypes, gc, os, sys, threading, time
import numpy as np
import tvm
from tvm.runtime.vm import VirtualMachine
from mnet_compile.device import runtime

path = sys.argv[1]
threads = lambda: len(os.listdir("/proc/self/task"))
base = threads()
x = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype("float32")
model = runtime.load(path)
assert model.own_thread_pool and threads() == base + 1, (model.own_thread_pool, threads(), base)
expected = model(x)
# TVM's pool on the same library: the loader's load() points the launches back at the artifact's pool
vm = VirtualMachine(tvm.runtime.load_module(os.path.join(path, "model.so")), tvm.cpu())
np.testing.assert_array_equal(vm["main"](tvm.runtime.tensor(x))[0].numpy(), expected)
del vm
gc.collect()
results = []
def calls():  # one model per thread, as the loader asks; both share the library's pool
    own = runtime.load(path)
    results.extend(np.array_equal(own(x), expected) for _ in range(30))
workers = [threading.Thread(target=calls) for _ in range(2)]
[w.start() for w in workers]
[w.join() for w in workers]
assert len(results) == 60 and all(results)
time.sleep(0.3)  # past the spin: the worker sleeps, and the next launch must wake it
np.testing.assert_array_equal(model(x), expected)
child = os.fork()
if child == 0:  # the workers are not in the child: its launches run in its one thread, until a load starts new ones
    inline = np.array_equal(model(x), expected)
    again = runtime.load(path)
    os._exit(0 if inline and again.own_thread_pool and np.array_equal(again(x), expected) else 1)
assert os.waitpid(child, 0)[1] == 0
np.testing.assert_array_equal(model(x), expected)
# TVM never unloads a library; a host that does (dlclose) must find the worker stopped and joined, not
# running or waking in unmapped code
mapped = lambda: any(line.rstrip().endswith("/model.so") for line in open("/proc/self/maps"))
running, handle, dlclose = threads(), ctypes.CDLL(os.path.join(path, "model.so"))._handle, ctypes.CDLL(None).dlclose
for _ in range(64):
    if not mapped():
        break
    dlclose(ctypes.c_void_p(handle))
time.sleep(0.05)
assert not mapped() and threads() == running - 1, (mapped(), running, threads())
print("ok", flush=True)
os._exit(0)  # TVM's objects still name the unloaded library
"""


def test_loader_runs_the_artifact_pool(compiled, tmp_path):
    """Through the loader: the pool starts (one worker for 2 threads), gives TVM's pool's logits, serves two
    threads' models of one library, works in a forked child (in one thread, then with new workers), and its
    worker is joined when the library is unloaded. In its own process: the pool is per library and process."""
    folder = compiled(0.25, 64)
    script = tmp_path / "pool_check.py"
    script.write_text(textwrap.dedent(LOADER_SCRIPT))
    env = {**os.environ, "TVM_NUM_THREADS": "2"}
    done = subprocess.run([sys.executable, str(script), str(folder)], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-2000:]
