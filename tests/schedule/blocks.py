"""Small conv blocks and how to run them: the schedule tests' shared material (no timing anywhere)."""

from __future__ import annotations

import re

import numpy as np
import torch
import tvm
from torch import nn
from tvm import relax

from mnet_compile.frontends import from_torch
from mnet_compile.graph.passes import finalize, fuse, optimize

TARGET = tvm.target.Target({"kind": "llvm", "mcpu": "znver3", "num-cores": 2})  # AVX2: 8 fp32 lanes
PIPELINE = tvm.transform.module_pass(lambda mod, _ctx: finalize(mod), opt_level=0, name="finalize")


def separable_block(cin: int, cout: int, stride: int, seed: int = 0) -> nn.Module:
    """3x3 depthwise + 1x1 pointwise, each with BatchNorm (folded into a bias) and ReLU."""
    torch.manual_seed(seed)
    block = nn.Sequential(
        nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False), nn.BatchNorm2d(cin), nn.ReLU(),
        nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
    )
    for m in block.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.5), m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.1, 0.1), m.running_var.uniform_(0.5, 1.5)
    return block.eval()


def fused_of(model: nn.Module, shape, blocks: bool = False) -> tvm.IRModule:
    return fuse(optimize(from_torch(model, shape)), blocks)


def run_vm(mod: tvm.IRModule, x: np.ndarray) -> np.ndarray:
    ex = tvm.compile(mod, TARGET, relax_pipeline=PIPELINE)
    out = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x))
    return (out[0] if not hasattr(out, "numpy") else out).numpy()


def run_kernel(kmod: tvm.IRModule, inputs: list[np.ndarray]) -> np.ndarray:
    args = [tvm.runtime.tensor(a) for a in inputs]
    tvm.compile(kmod, TARGET)["main"](*args)
    return args[-1].numpy()


def rule_of(func) -> set[str]:
    """The custom rules named by the kernel's block annotations."""
    return set(re.findall(r'"schedule_rule": "(mnet\.[^"]+)"', func.script()))


def parallel_loop(func) -> str:
    """The name of a scheduled kernel's parallel loop: the fused loops' names, outermost first."""
    (line,) = [line for line in func.script().splitlines() if "T.parallel" in line]
    return line.split()[1]
