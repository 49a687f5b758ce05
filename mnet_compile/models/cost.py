"""The MobileNet v1 paper's cost model (mult-adds and parameters), without torch.

The layers come from v1_table.py, the table the torch module is built from (tests/models/test_cost.py checks
the counts against that module), so `mnet-compile info` needs neither torch nor TVM.

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

from .checks import check_alpha, check_classes, check_resolution
from .v1_table import Conv, convs

SHARE_TYPES = {"pointwise": "Conv 1x1", "depthwise": "Conv DW 3x3", "conv": "Conv 3x3", "fc": "Fully Connected"}
CONVENTIONS = [
    "mult_adds: conv Cout*Hout*Wout*(Cin/groups)*Kh*Kw, FC In*Out; BatchNorm, ReLU, biases and avgpool count 0",
    "params: conv + FC weights (the paper's 4.2M for 1.0-224); FC bias and BatchNorm gamma/beta reported apart",
    "channels: max(8, int(c * alpha)) for every layer, stem and last included: 0.75-224 gives the paper's 325M, "
    "not TF-slim's 317M (no rounding or unscaled-layer variant gives 317M; see mnet_compile/models/cost.py)",
    "Table 7's 290M for 1.0-160 is 569M * (160/224)^2; the exact count is 290.7M",
    "Table 2's 1.19% for Conv 3x3 mult-adds is a digit swap of 1.91%",
]


def _conv_row(conv: Conv, size: int) -> tuple[dict, int]:
    """The conv's row and its output size (padding kernel // 2)."""
    out = (size + 2 * (conv.kernel // 2) - conv.kernel) // conv.stride + 1
    if conv.groups > 1 and conv.groups == conv.cin:
        kind = "depthwise"
    else:
        kind = "pointwise" if conv.kernel == 1 else "conv"
    weights = conv.cout * conv.cin // conv.groups * conv.kernel**2
    row = {
        "type": kind, "input": [conv.cin, size, size], "output": [conv.cout, out, out],
        "kernel": f"{conv.kernel}x{conv.kernel}/s{conv.stride}", "bias": 0,
        "mult_adds": weights * out * out, "params": weights,
    }
    return row, out


def cost_report(alpha: float, resolution: int, classes: int = 1000) -> dict:
    """Per-layer mult-adds and params of MobileNet v1 alpha-resolution, with Table 2 shares and eq. 5 ratios."""
    alpha, resolution, classes = check_alpha(alpha), check_resolution(resolution), check_classes(classes)
    layers, rows, size = convs(alpha), [], resolution
    for conv in layers:
        row, size = _conv_row(conv, size)
        rows.append(row)
    channels = rows[-1]["output"][0]
    rows.append({"type": "avgpool", "input": [channels, size, size], "output": [channels, 1, 1],
                 "kernel": f"{size}x{size}/global", "bias": 0, "mult_adds": 0, "params": 0})
    rows.append({"type": "fc", "input": [channels], "output": [classes], "kernel": "", "bias": classes,
                 "mult_adds": channels * classes, "params": channels * classes})
    bn_params = sum(2 * conv.cout for conv in layers)  # every conv has a BatchNorm (gamma, beta)
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
        "alpha": alpha, "resolution": resolution, "classes": classes,
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
