import pytest

from mnet_compile.models import create_model

from .files import export_onnx


@pytest.fixture(scope="module")
def small_onnx(tmp_path_factory):
    """MobileNet v1 0.25-64 as ONNX, with a static and with a dynamic batch dimension."""
    folder = tmp_path_factory.mktemp("onnx")
    model = create_model(alpha=0.25, seed=1)
    return {
        "static": export_onnx(model, folder / "v1.onnx", 64),
        "dynamic": export_onnx(model, folder / "v1_dyn.onnx", 64, dynamic=True),
    }
