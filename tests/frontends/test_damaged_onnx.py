"""A damaged ONNX graph (a flipped byte in a tensor name) is named in one line."""

from __future__ import annotations

from ..helpers import error_line, run_cli


def test_damaged_onnx_graph_is_named(capsys, tmp_path):
    """A flipped byte in a tensor name gave `cannot import: '<name>'` (the frontend's KeyError) followed by
    TVM's BlockBuilder warning; now one line that says what is damaged."""
    import onnx

    from mnet_compile.models import create_model
    from mnet_compile.peer_models import write_onnx

    path = tmp_path / "v1.onnx"
    write_onnx(create_model(alpha=0.25, seed=1), (1, 3, 32, 32), path)
    model = onnx.load(str(path))
    node = model.graph.node[3]
    node.input[0] = node.input[0] + "x"
    onnx.save(model, str(path))
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, "--from", path, "--output", out)
    assert code == 1 and error_line(err) and "damaged ONNX graph: node" in err and "which nothing produces" in err, err
    assert "Warning" not in err and not out.exists()
