"""Channel padding: exact (zero weights), and only where every consumer of a padded tensor is understood."""

from __future__ import annotations

import pytest
import torch
import tvm

from mnet_compile.device.runtime import load
from mnet_compile.frontends import from_torch
from mnet_compile.graph.padding import pad_channels, padded_size
from mnet_compile.graph.passes import optimize
from mnet_compile.models import create_model

from ..helpers import assert_matches, assert_matches_pytorch, random_input


def test_padded_sizes():
    assert [padded_size(c, 16) for c in (3, 8, 12, 16, 25, 409, 1024)] == [4, 8, 16, 16, 32, 416, 1024]
    assert [padded_size(c, 8) for c in (11, 22, 89)] == [16, 24, 96]


def test_channel_padding_is_exact_and_vectorizable():
    model = create_model(alpha=0.4, seed=3)
    x = random_input((1, 3, 96, 96))
    mod = optimize(from_torch(model, x.shape))
    padded = pad_channels(mod, 16)
    text = padded["main"].script()
    assert "409" not in text.split("R.matmul")[0] and "416" in text  # 409 channels became 416
    assert "(1, 1000)" in text  # the output keeps its shape
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    for m in (mod, padded):
        ex = tvm.compile(m, tvm.target.Target({"kind": "llvm"}))
        out = tvm.relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x))
        assert_matches((out[0] if not hasattr(out, "numpy") else out).numpy(), ref)


def test_channel_padding_leaves_unknown_graphs_alone():
    class Odd(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 12, 1)

        def forward(self, x):
            return torch.nn.functional.softmax(self.conv(x), dim=1)  # a softmax over the channels

    mod = optimize(from_torch(Odd().eval(), (1, 3, 8, 8)))
    assert pad_channels(mod, 16).same_as(mod)


@pytest.mark.parametrize("alpha,resolution", [(0.35, 224), (0.6, 160)])
def test_odd_alphas_match_pytorch(compiled, alpha, resolution):
    """Channel counts no vector width divides (0.35: 11, 22, 44, 89, 179, 358) still match PyTorch."""
    x = random_input((1, 3, resolution, resolution), seed=4)
    assert_matches_pytorch(load(str(compiled(alpha, resolution, seed=5)))(x), x, alpha=alpha, seed=5)
