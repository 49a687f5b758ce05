"""The graph passes: BatchNorm folded into the convolutions, NHWC/HWIO layout."""

from mnet_compile import frontends
from mnet_compile.graph import passes
from mnet_compile.models import create_model


def test_batchnorm_is_folded_and_layout_is_nhwc():
    mod = passes.optimize(frontends.from_torch(create_model(alpha=0.25, seed=7), (1, 3, 64, 64)))
    text = mod.script(show_meta=False)
    assert "batch_norm" not in text and text.count("R.nn.conv2d(") == 27
    assert 'data_layout="NHWC"' in text and 'kernel_layout="HWIO"' in text
