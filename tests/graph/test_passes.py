"""The graph passes: BatchNorm folded into the convolutions, NHWC/HWIO layout."""

from mnet_compile import frontends
from mnet_compile.graph import passes
from mnet_compile.models import create_model


def test_batchnorm_is_folded_and_layout_is_nhwc():
    mod = passes.optimize(frontends.from_torch(create_model(alpha=0.25, seed=7), (1, 3, 64, 64)))
    text = mod.script(show_meta=False)
    assert "batch_norm" not in text and text.count("R.nn.conv2d(") == 27
    assert 'data_layout="NHWC"' in text and 'kernel_layout="HWIO"' in text


def test_classifier_becomes_a_1x1_conv():
    """On a CPU the classifier's matmul runs as a 1x1 conv, which the conv rule schedules."""
    from mnet_compile.frontends import from_torch
    from mnet_compile.graph.passes import optimize
    from mnet_compile.models import create_model

    mod = from_torch(create_model(alpha=0.25), (1, 3, 64, 64))
    assert "R.matmul" in optimize(mod)["main"].script()  # no lanes (a GPU): left as it is
    text = optimize(mod, 16)["main"].script()
    assert "R.matmul" not in text and text.count("R.nn.conv2d(") == 28  # 27 convs and the classifier
