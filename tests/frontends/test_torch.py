"""torch.export archives (.pt2): a dynamic shape needs --input-shape, then the artifact matches PyTorch."""

import warnings

import pytest
import torch

from mnet_compile.device import runtime
from mnet_compile.models import create_model

from ..helpers import assert_matches_pytorch, error_line, random_input, run_cli
from .files import compile_file


@pytest.mark.slow
def test_pt2_dynamic_shape_needs_input_shape(capsys, tmp_path):
    model = create_model(alpha=0.25, seed=4)
    dims = {"x": {2: torch.export.Dim.DYNAMIC, 3: torch.export.Dim.DYNAMIC}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.export.export(model, (torch.zeros(1, 3, 64, 64),), dynamic_shapes=dims)
    path = tmp_path / "dyn.pt2"
    torch.export.save(program, str(path))
    out = tmp_path / "art"
    code, _, err = run_cli(capsys, "--from", path, "--output", out)
    line = error_line(err)
    assert code == 1 and "dynamic shape" in line and "--input-shape" in line
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["dyn.pt2"]
    manifest = compile_file(capsys, path, out, "--input-shape", "1,3,96,96")
    assert manifest["input"]["shape"] == [1, 3, 96, 96] and manifest["source"]["format"] == "pt2"
    x = random_input((1, 3, 96, 96), seed=4)
    assert_matches_pytorch(runtime.load(str(out))(x), x, alpha=0.25, seed=4)
