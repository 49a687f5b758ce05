"""The cost model against the MobileNet v1 paper (arXiv 1704.04861) Tables 2, 6, 7 and equation 5."""

import json

import pytest
import torch
from torch import nn

from mnet_compile.errors import MnetError
from mnet_compile.models.cost import cost_report, format_cost_report
from mnet_compile.models.mobilenet_v1 import MobileNetV1


@pytest.mark.parametrize(
    "alpha, mult_adds, params", [(1.0, 569, 4.2), (0.75, 325, 2.6), (0.5, 149, 1.3), (0.25, 41, 0.5)]
)
def test_table6_width_multiplier(alpha, mult_adds, params):
    totals = cost_report(alpha, 224)["totals"]
    assert round(totals["mult_adds"] / 1e6) == mult_adds  # 0.75: the paper's 325M, not TF-slim's 317M
    assert round(totals["params"] / 1e6, 1) == params


def test_table6_exact_counts():
    assert cost_report(1.0, 224)["totals"]["mult_adds"] == 568_740_352
    assert cost_report(0.75, 224)["totals"]["mult_adds"] == 325_400_448


@pytest.mark.parametrize("resolution, paper", [(224, 569), (192, 418), (160, 290), (128, 186)])
def test_table7_resolution(resolution, paper):
    exact = cost_report(1.0, resolution)["totals"]["mult_adds"] / 1e6
    assert abs(exact - paper) < 1
    # The paper scaled 1.0-224 by rho^2, which reproduces all four entries (exact 160 is 290.7M).
    assert round(cost_report(1.0, 224)["totals"]["mult_adds"] / 1e6 * (resolution / 224) ** 2) == paper


def test_table7_160_exact_is_291():
    assert round(cost_report(1.0, 160)["totals"]["mult_adds"] / 1e6) == 291


def test_table2_shares():
    shares = cost_report(1.0, 224)["shares"]
    rounded = {name: (round(s["mult_adds"], 2), round(s["params"], 2)) for name, s in shares.items()}
    # The paper prints 1.19% for the stem's mult-adds: a digit swap of 1.91% (the shares must sum to 100%).
    assert rounded == {
        "Conv 1x1": (94.86, 74.59),
        "Conv DW 3x3": (3.06, 1.06),
        "Conv 3x3": (1.91, 0.02),
        "Fully Connected": (0.18, 24.33),
    }
    assert sum(s["mult_adds"] for s in shares.values()) == pytest.approx(100)


@pytest.mark.parametrize("alpha, classes", [(1.0, 1000), (0.75, 1000), (0.25, 10)])
def test_params_match_torch_model(alpha, classes):
    model = MobileNetV1(alpha, classes)
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    report = cost_report(alpha, 224, classes)
    assert report["totals"]["params"] == sum(m.weight.numel() for m in layers)
    with_bias = sum(p.numel() for m in layers for p in m.parameters())
    assert report["totals"]["params"] + report["totals"]["bias"] == with_bias
    bn = sum(p.numel() for m in model.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters())
    assert report["totals"]["bn_params"] == bn


@pytest.mark.parametrize("alpha, resolution, classes", [(1.0, 224, 1000), (0.35, 96, 10)])
def test_rows_match_torch_model(alpha, resolution, classes):
    """The table the report is computed from is the one the torch module runs: shapes and mult-adds per layer."""
    model = MobileNetV1(alpha, classes).eval()
    seen = []
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            m.register_forward_hook(lambda m, args, out: seen.append((list(args[0].shape[1:]), list(out.shape[1:]))))
    with torch.no_grad():
        model(torch.zeros(1, 3, resolution, resolution))
    rows = [r for r in cost_report(alpha, resolution, classes)["rows"] if r["type"] != "avgpool"]
    assert [(r["input"], r["output"]) for r in rows] == seen
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [r["mult_adds"] for r in rows[:-1]] == [m.weight.numel() * r["output"][1] * r["output"][2] for m, r in zip(convs, rows)]


def test_rows():
    rows = cost_report(0.5, 160)["rows"]
    assert [r["type"] for r in rows] == ["conv"] + ["depthwise", "pointwise"] * 13 + ["avgpool", "fc"]
    assert rows[0] == {
        "index": 0, "type": "conv", "input": [3, 160, 160], "output": [16, 80, 80], "kernel": "3x3/s2",
        "mult_adds": 80 * 80 * 27 * 16, "params": 27 * 16, "bias": 0,
    }
    assert rows[3]["kernel"] == "3x3/s2" and rows[3]["output"] == [32, 40, 40]
    assert rows[-1]["input"] == [512] and rows[-1]["output"] == [1000] and rows[-1]["bias"] == 1000


def test_equation5_block():
    blocks = cost_report(1.0, 224)["blocks"]
    assert len(blocks) == 13
    first = blocks[0]  # 32 -> 64 at 112x112
    assert first["separable_mult_adds"] == 112 * 112 * (9 * 32 + 32 * 64)
    assert first["standard_mult_adds"] == 112 * 112 * 9 * 32 * 64
    assert first["ratio"] == pytest.approx(1 / 64 + 1 / 9)
    assert blocks[-1]["ratio"] == pytest.approx(1 / 1024 + 1 / 9) == blocks[-1]["equation5"]


def test_json_and_format():
    report = cost_report(0.25, 128, classes=10)
    assert json.loads(json.dumps(report)) == report
    text = format_cost_report(report)
    assert "Conv DW 3x3" in text and "1/N+1/Dk2" in text and "317M" in text
    assert f"{report['totals']['mult_adds'] / 1e6:.1f}M mult-adds" in text


@pytest.mark.parametrize("alpha, resolution", [(0, 224), (1.5, 224), ("x", 224), (1.0, 100), (1.0, 0), (1.0, "big")])
def test_bad_input(alpha, resolution):
    with pytest.raises(MnetError):
        cost_report(alpha, resolution)


def test_bad_classes():
    with pytest.raises(MnetError):
        cost_report(1.0, 224, classes=0)
