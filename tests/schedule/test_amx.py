"""The int8 1x1 convs on Intel AMX tiles (rules/amx.py): which kernels take them, the code, the blocking,
and the refusal where the kernel withholds the tiles. Exactness on an AMX host: test_int8's x86 families."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import tvm
from tvm.s_tir import meta_schedule as ms

from mnet_compile.frontends.integer import to_relax
from mnet_compile.graph.passes import fuse
from mnet_compile.schedule.rules import default_schedule
from mnet_compile.schedule.rules.amx import REFUSED, has_amx
from mnet_compile.schedule.rules.int8 import AMX_RULE, DOT_ISAS, amx_blocking, dot_form, pointwise_form
from mnet_compile.schedule.tunable import tunable_kernels

from .test_int8 import VNNI, _chain, _host_has

SPR = tvm.target.Target({"kind": "llvm", "mcpu": "sapphirerapids", "num-cores": 2})


def _kernels(target):
    _, found = tunable_kernels(fuse(to_relax(_chain(), dot_form(target), pointwise_form(target))), target)
    return {gv.name_hint: (func.script(), kmod) for gv, func, kmod in found}


def test_amx_takes_the_1x1_convs_only_where_the_target_has_it():
    assert has_amx(SPR) and not has_amx(VNNI) and not has_amx(tvm.target.Target({"kind": "llvm", "mcpu": "znver4"}))
    assert pointwise_form(SPR) == "i8i8" and pointwise_form(VNNI) is None
    spr = {name: script for name, (script, _) in _kernels(SPR).items() if "fused_conv_" in name}
    tiled = [name for name, script in spr.items() if AMX_RULE in script]
    assert len(spr) == 3 and len(tiled) == 2  # the two 1x1 convs (s8 x s8); the 3x3 stem keeps the VNNI rule
    assert all("conv_i8i8" in name and "data_u8" not in spr[name] for name in tiled)
    assert all(DOT_ISAS["x86-avx512-vnni"].rule in script for name, script in spr.items() if name not in tiled)
    assert all('T.sblock("amx_permission")' in spr[name] for name in tiled)
    assert not any(AMX_RULE in script for script, _ in _kernels(VNNI).values())


def test_amx_kernel_code():
    """tdpbssd on tile registers after ldtilecfg, the tiles released, the permission asked first, and no data
    pass: the tiles load the int8 input itself."""
    (kmod,) = [kmod for script, kmod in _kernels(SPR).values() if AMX_RULE in script and "T.int64(8), T.int64(8)" in script]
    with SPR:
        asm = tvm.compile(default_schedule(kmod, SPR).mod, target=SPR).mod.inspect_source("asm")
    lines = [line.split() for line in asm.splitlines() if line.strip() and not line.strip().startswith((".", "#"))]
    ops = [words[0] for words in lines]
    assert ops.count("tdpbssd") >= 2 and "ldtilecfg" in ops and "tilerelease" in ops and "tilezero" in ops
    assert any(op == "callq" or op == "call" for op in ops) and "syscall" in asm
    assert ops.index("ldtilecfg") < ops.index("tdpbssd") and "data_i8" not in default_schedule(kmod, SPR).mod.script()


def test_records_of_amx_kernels_load_in_a_fresh_process(tmp_path):
    """A record's trace names its AMX intrinsic (made per block size); loading the records registers it
    first, where MetaSchedule would fail on an unknown intrinsic."""
    (kmod,) = [kmod for script, kmod in _kernels(SPR).values() if AMX_RULE in script and "T.int64(8), T.int64(8)" in script]
    db = ms.database.JSONDatabase(work_dir=str(tmp_path))
    trace = default_schedule(kmod, SPR).trace
    args = ms.arg_info.ArgInfo.from_prim_func(kmod["main"])
    db.commit_tuning_record(ms.database.TuningRecord(trace, db.commit_workload(kmod), [1e-5], SPR, args))
    del db
    code = "import sys; from mnet_compile.schedule.records import load_records; print(len(load_records(sys.argv[1]).get_all_tuning_records()))"
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.split()[-1] == "1", done.stderr[-800:]


def test_amx_blocking():
    assert amx_blocking(14, 14, 32, 2) == {"rows": 7, "nt": 2}  # 98 pixels x 32 channels, a core's own 7 rows
    assert amx_blocking(112, 112, 4, 2) == {"rows": 2, "nt": 2}  # 224 pixels
    assert amx_blocking(28, 28, 16, 2) == {"rows": 7, "nt": 2}  # 196 pixels
    assert amx_blocking(7, 7, 64, 2) == {"rows": 1, "nt": 2}  # 7 rows: no divisor but 1 gives each core rows
    assert amx_blocking(64, 64, 1, 2) == {"rows": 4, "nt": 1}  # 16 channels: one panel
    for h, w, panels in ((56, 56, 8), (4, 4, 3), (1, 1, 63), (13, 300, 6)):
        rows, nt = amx_blocking(h, w, panels, 2).values()
        assert h % rows == 0 and panels % nt == 0 and nt <= 2 and (rows * w <= 256 or rows == 1)


SHIM = textwrap.dedent("""\
    #define _GNU_SOURCE
    #include <dlfcn.h>
    #include <errno.h>
    #include <stdarg.h>
    /* syscall(2) as libc's, except that the request for the AMX tile data is refused (an old kernel). */
    long syscall(long number, ...) {
      va_list ap; va_start(ap, number);
      long a[6]; for (int i = 0; i < 6; i++) a[i] = va_arg(ap, long);
      va_end(ap);
      if (number == 158 && a[0] == 0x1023) { errno = EPERM; return -1; }
      long (*real)(long, ...) = (long (*)(long, ...))dlsym(RTLD_NEXT, "syscall");
      return real(number, a[0], a[1], a[2], a[3], a[4], a[5]);
    }
""")


def test_a_refused_permission_is_one_clear_error(compiled, tmp_path):
    """Where Linux withholds the tiles, loading the artifact fails with REFUSED on one line, no SIGILL."""
    if not _host_has("amx-int8"):
        pytest.skip("this machine has no AMX: the x86 preset builds no AMX kernel here")
    artifact = compiled(0.25, 128, quantize="int8")
    (tmp_path / "shim.c").write_text(SHIM)
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(tmp_path / "shim.so"), str(tmp_path / "shim.c"), "-ldl"], check=True)
    env = {**os.environ, "LD_PRELOAD": str(tmp_path / "shim.so")}
    done = subprocess.run([sys.executable, "-m", "mnet_compile.cli", "run", str(artifact)], env=env, capture_output=True, text=True)
    assert done.returncode != 0 and done.returncode > 0  # an exit code, not a signal
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and REFUSED in lines[0], done.stderr
    assert subprocess.run([sys.executable, "-m", "mnet_compile.cli", "run", str(artifact)], capture_output=True).returncode == 0
