"""Latency estimates from a few measured configurations and the per-layer cost (`--predict`).

Model: latency = c + w_conv * M_conv + w_dw * M_dw + w_pw * M_pw + w_fc * M_fc, where M_t is the mult-adds
of the layers of type t (the 3x3 stem conv, the depthwise convs, the pointwise convs, the classifier) from
models/cost.py, and c (fixed per-inference overhead) and every w_t (ms per mult-add of that layer type) are
fitted by non-negative least squares on the measured configurations. Over the paper's configurations the stem
and the depthwise mult-adds are both proportional to alpha * resolution^2, so the fit cannot tell them apart
and keeps one of them; the estimates do not depend on which. The anchors measured by default are the four
corners and the centre of the paper's grid (PREDICT_MEASURED); the others are estimates and said to be.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np

from ..errors import MnetError
from ..models.cost import cost_report

LAYER_TYPES = ("conv", "depthwise", "pointwise", "fc")
TERMS = ("constant",) + LAYER_TYPES
PREDICT_MEASURED = [(1.0, 224), (1.0, 128), (0.5, 160), (0.25, 224), (0.25, 128)]


def features(alpha: float, resolution: int) -> np.ndarray:
    """[1, millions of mult-adds of each layer type] of one configuration."""
    rows = cost_report(alpha, resolution)["rows"]
    return np.array([1.0] + [sum(r["mult_adds"] for r in rows if r["type"] == t) / 1e6 for t in LAYER_TYPES])


def nnls(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """argmin |a x - b| over x >= 0, exactly, by trying every support of full column rank (5 columns: 31)."""
    best, best_x = None, np.zeros(a.shape[1])
    for size in range(1, a.shape[1] + 1):
        for support in combinations(range(a.shape[1]), size):
            sub = a[:, support]
            if size > a.shape[0] or np.linalg.matrix_rank(sub) < size:
                continue
            x, *_ = np.linalg.lstsq(sub, b, rcond=None)
            if (x < 0).any():
                continue
            residual = float(np.sum((sub @ x - b) ** 2))
            if best is None or residual < best - 1e-12 * max(1.0, best):
                best, best_x = residual, np.zeros(a.shape[1])
                best_x[list(support)] = x
    return best_x


def fit(measured: dict) -> dict:
    """{term: coefficient} from {(alpha, resolution): latency ms} (at least two configurations)."""
    if len(measured) < 2:
        raise MnetError("--predict needs at least two measured configurations to fit")
    configs = sorted(measured)
    a = np.stack([features(*c) for c in configs])
    b = np.array([measured[c] for c in configs], dtype=float)
    return dict(zip(TERMS, nnls(a, b).tolist()))


def estimate(coefficients: dict, alpha: float, resolution: int) -> float:
    """The fitted model's latency (ms) of one configuration."""
    return float(features(alpha, resolution) @ np.array([coefficients[t] for t in TERMS]))
