"""The tunable kernels: what tuning and compiling both hash, so records match."""

from __future__ import annotations

import tvm_ffi
from tvm.s_tir.meta_schedule.tune_context import _normalize_mod

from mnet_compile.schedule.tunable import tunable_kernels

from .blocks import TARGET, fused_of, rule_of, separable_block


def test_kernels_are_annotated_and_hashed_as_metaschedule_does():
    fused = fused_of(separable_block(16, 24, 1), (1, 16, 14, 14))
    mod, found = tunable_kernels(fused, TARGET)
    assert {r for _, func, _ in found for r in rule_of(func)} == {"mnet.dw3x3.x86-avx2", "mnet.conv1x1.x86-avx2"}
    for gv, func, kmod in found:
        assert mod[gv].same_as(func)
        assert tvm_ffi.structural_equal(kmod, _normalize_mod(func)), gv.name_hint  # TuneContext's own normalization
    again, found_again = tunable_kernels(mod, TARGET)  # annotating twice changes nothing
    assert sorted(tvm_ffi.structural_hash(k) for *_, k in found_again) == sorted(tvm_ffi.structural_hash(k) for *_, k in found)
