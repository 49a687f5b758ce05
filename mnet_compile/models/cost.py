"""The MobileNet v1 paper's cost model (mult-adds and parameters), measured on the torch model itself.

The layers are found by running `MobileNetV1(alpha, classes)` on the meta device with forward hooks, so the
table follows model.py; nothing here is a hard-coded layer list.

Conventions (the paper's, checked against its Tables 2, 6 and 7):
- mult-adds: a conv costs Cout*Hout*Wout * (Cin/groups)*Kh*Kw, the FC In*Out; BatchNorm, ReLU, biases and the
  average pool (additions only) cost nothing.
- params: conv weights + FC weights, no FC bias and no BatchNorm. Table 2's parameter shares (1x1 74.59%,
  FC 24.33%) only come out with the FC bias left out (with it: 74.57% / 24.35%). The bias and the BatchNorm
  parameters (gamma, beta; folded into the convs at inference) are reported apart as `bias` and `bn_params`.
- width: every layer, the stem and the last one included, has max(8, int(c * alpha)) channels (TF-slim's rule).
  This gives 325.4M mult-adds for 0.75-224, the paper's Table 6 value (325M), which we follow. Rounding cannot
  explain TF-slim's published 317M: 0.75 * {32, 64, ..., 1024} are all integers, so int/round/ceil agree. Leaving
  the stem at 32 channels gives 333.8M, the last layer at 1024 gives 335.3M, both 343.7M: all larger. TF-slim's
  0.75 rows (317/233/162/104 at 224/192/160/128) are ~2.6% below ours, a gap that scales with resolution**2 and
  is the size of the stem conv (8.1M at 224); but leaving the stem out at alpha 1.0 would give 558M, not TF-slim's
  569M, so no single counting reproduces that table (its 0.25-192 row, 34M against 30.2M, is also off).
- Table 7 prints 290M for 1.0-160, while the exact count is 290.7M (291M, as TF-slim lists it): the paper scaled
  569M by rho**2 (569 * (160/224)**2 = 290.3M), which ignores that the FC does not shrink with resolution.
- Table 2 prints 1.19% for the 3x3 stem's mult-adds; the count is 1.91% (with 1.91 the four shares sum to 100%).
"""

from __future__ import annotations

import torch
from torch import nn

from .model import MobileNetV1, check_resolution

SHARE_TYPES = {"pointwise": "Conv 1x1", "depthwise": "Conv DW 3x3", "conv": "Conv 3x3", "fc": "Fully Connected"}
CONVENTIONS = [
    "mult_adds: conv Cout*Hout*Wout*(Cin/groups)*Kh*Kw, FC In*Out; BatchNorm, ReLU, biases and avgpool count 0",
    "params: conv + FC weights (the paper's 4.2M for 1.0-224); FC bias and BatchNorm gamma/beta reported apart",
    "channels: max(8, int(c * alpha)) for every layer, stem and last included: 0.75-224 gives the paper's 325M, "
    "not TF-slim's 317M (no rounding or unscaled-layer variant gives 317M; see mnet_compile/cost.py)",
    "Table 7's 290M for 1.0-160 is 569M * (160/224)^2; the exact count is 290.7M",
    "Table 2's 1.19% for Conv 3x3 mult-adds is a digit swap of 1.91%",
]


def _layer_type(module: nn.Module) -> str:
    if isinstance(module, nn.Linear):
        return "fc"
    if isinstance(module, nn.AdaptiveAvgPool2d):
        return "avgpool"
    if module.groups > 1 and module.groups == module.in_channels:
        return "depthwise"
    return "pointwise" if module.kernel_size == (1, 1) else "conv"


def _row(module: nn.Module, inp: torch.Tensor, out: torch.Tensor) -> dict:
    kind = _layer_type(module)
    row = {"type": kind, "input": list(inp.shape[1:]), "output": list(out.shape[1:]), "kernel": "", "bias": 0}
    if kind == "fc":
        row.update(mult_adds=module.in_features * module.out_features, params=module.in_features * module.out_features)
        row["bias"] = module.out_features if module.bias is not None else 0
    elif kind == "avgpool":
        row.update(kernel=f"{inp.shape[2]}x{inp.shape[3]}/global", mult_adds=0, params=0)
    else:
        (kh, kw), stride = module.kernel_size, module.stride[0]
        weights = module.out_channels * module.in_channels // module.groups * kh * kw
        row.update(kernel=f"{kh}x{kw}/s{stride}", mult_adds=weights * out.shape[2] * out.shape[3], params=weights)
    return row


def cost_report(alpha: float, resolution: int, classes: int = 1000) -> dict:
    """Per-layer mult-adds and params of MobileNet v1 alpha-resolution, with Table 2 shares and eq. 5 ratios."""
    resolution = check_resolution(resolution)
    with torch.device("meta"):
        model = MobileNetV1(alpha, classes)
    rows, bn_params = [], 0
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear, nn.AdaptiveAvgPool2d)):
            module.register_forward_hook(lambda m, args, out: rows.append(_row(m, args[0], out)))
        elif isinstance(module, nn.BatchNorm2d):
            bn_params += 2 * module.num_features
    with torch.no_grad():
        model(torch.empty(1, 3, resolution, resolution, device="meta"))
    for index, row in enumerate(rows):
        row["index"] = index
    totals = {key: sum(r[key] for r in rows) for key in ("mult_adds", "params", "bias")}
    totals["bn_params"] = bn_params
    shares = {
        name: {key: 100.0 * sum(r[key] for r in rows if r["type"] == kind) / totals[key]
               for key in ("mult_adds", "params")}
        for kind, name in SHARE_TYPES.items()
    }
    blocks = []
    for dw, pw in zip(rows, rows[1:]):
        if dw["type"] == "depthwise" and pw["type"] == "pointwise":
            m, n, size = dw["input"][0], pw["output"][0], dw["output"][1] * dw["output"][2]
            k2 = dw["params"] // m  # Dk^2
            separable, standard = dw["mult_adds"] + pw["mult_adds"], k2 * m * n * size
            blocks.append({
                "block": len(blocks) + 1, "in": m, "out": n, "size": dw["output"][1],
                "separable_mult_adds": separable, "standard_mult_adds": standard,
                "ratio": separable / standard, "equation5": 1 / n + 1 / k2,
            })
    return {
        "alpha": model.alpha, "resolution": resolution, "classes": classes,
        "rows": rows, "totals": totals, "shares": shares, "blocks": blocks, "conventions": CONVENTIONS,
    }


def format_cost_report(report: dict) -> str:
    """The report as plain-text tables: layers, totals in millions, Table 2 shares, equation 5 per block."""
    lines = [f"MobileNet v1 alpha={report['alpha']} resolution={report['resolution']} classes={report['classes']}",
             f"{'#':>3} {'type':<10} {'kernel':<12} {'input':<16} {'output':<16} {'mult-adds':>13} {'params':>10}"]
    for r in report["rows"]:
        shape_in, shape_out = "x".join(map(str, r["input"])), "x".join(map(str, r["output"]))
        lines.append(f"{r['index']:>3} {r['type']:<10} {r['kernel']:<12} {shape_in:<16} {shape_out:<16} "
                     f"{r['mult_adds']:>13,} {r['params']:>10,}")
    t = report["totals"]
    lines += [f"total: {t['mult_adds'] / 1e6:.1f}M mult-adds, {t['params'] / 1e6:.2f}M params "
              f"(+ {t['bias']:,} FC bias, {t['bn_params']:,} BatchNorm params)", "",
              f"{'type':<16} {'mult-adds':>9} {'params':>8}"]
    lines += [f"{name:<16} {s['mult_adds']:>8.2f}% {s['params']:>7.2f}%" for name, s in report["shares"].items()]
    lines += ["", f"{'block':>5} {'in':>5} {'out':>5} {'size':>4} {'dw+pw':>12} {'standard':>14} "
                  f"{'ratio':>7} {'1/N+1/Dk2':>10}"]
    lines += [f"{b['block']:>5} {b['in']:>5} {b['out']:>5} {b['size']:>4} {b['separable_mult_adds']:>12,} "
              f"{b['standard_mult_adds']:>14,} {b['ratio']:>7.4f} {b['equation5']:>10.4f}" for b in report["blocks"]]
    lines += ["", "conventions:"] + [f"- {note}" for note in report["conventions"]]
    return "\n".join(lines)
