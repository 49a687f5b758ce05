"""The input stage compiled into CPU artifacts: a parallel copy that counts NaN and infinite values."""

import numpy as np
import pytest
import tvm
import tvm_ffi

from mnet_compile.device import runtime
from mnet_compile.export.input_stage import STAGE_FUNCTION, STAGE_SLOTS, input_stage
from mnet_compile.schedule import lowering


def test_loader_restates_the_stage_names():
    """runtime.py stands alone on the device: its copies of the names must not drift."""
    assert (runtime.STAGE_FUNCTION, runtime.STAGE_SLOTS) == (STAGE_FUNCTION, STAGE_SLOTS)


@pytest.mark.parametrize("elements,parts", [(11, 3), (12, 2), (5, 1), (3, 4)])
def test_stage_copies_and_counts_every_part(elements, parts):
    """Parts that do not divide the input (11 in 3, 3 in 4) copy every element once and count in their own slot."""
    target = tvm.target.Target({"kind": "llvm", "num-cores": parts})
    stage = tvm.compile(tvm.IRModule({"s": input_stage(elements, parts)}), target, tir_pipeline=lowering.NAME)[STAGE_FUNCTION]
    memory = np.arange(elements + 1, dtype="float32") + 0.5
    x = memory[1:]  # 4 bytes past numpy's (16-byte aligned) start
    staged = tvm.runtime.empty((elements,), "float32")
    counts = tvm.runtime.tensor(np.full(STAGE_SLOTS, 7, "int32"))
    stage(tvm_ffi.from_dlpack(x), staged, counts)
    np.testing.assert_array_equal(staged.numpy(), x)
    assert counts.numpy()[:parts].tolist() == [0] * parts
    x[0], x[-1] = np.nan, -np.inf
    stage(tvm_ffi.from_dlpack(x), staged, counts)
    chunk = -(-elements // parts)
    expected = np.zeros(parts, "int32")
    np.add.at(expected, [0, (elements - 1) // chunk], 1)
    assert counts.numpy()[:parts].tolist() == expected.tolist()
    x[...] = np.finfo("float32").max  # the largest finite values are not counted
    stage(tvm_ffi.from_dlpack(x), staged, counts)
    assert counts.numpy()[:parts].sum() == 0
