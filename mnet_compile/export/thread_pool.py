"""The artifact's own fork-join thread pool (thread_pool.cc), linked into every CPU build's model.so.

TVM's pool costs about 1.2 us per parallel kernel on a 2-core x86 VM (a queue per worker, a launcher reset per
launch, sched_yield in every spin); a MobileNet runs 20-30 of them per inference. The loader
(device/runtime.py) calls POOL_FUNCTION(threads) once after loading, which points the kernels' launches at
this pool. device/runtime.py restates POOL_FUNCTION (tests/export/test_thread_pool.py keeps them in step).
"""

from __future__ import annotations

from pathlib import Path

POOL_FUNCTION = "mnet_thread_pool"  # its symbol in model.so
SOURCE = Path(__file__).with_name("thread_pool.cc")


def link_options() -> dict:
    """export_library's keyword arguments that compile the pool's source into the library (any gcc-like
    compiler driver, the cross compilers included), with tvm-ffi's C API header for the one function."""
    import tvm_ffi.libinfo

    includes = [tvm_ffi.libinfo.find_include_path(), tvm_ffi.libinfo.find_dlpack_include_path()]
    return {"addons": [str(SOURCE)], "options": ["-O2", "-pthread", *(f"-I{path}" for path in includes)]}
