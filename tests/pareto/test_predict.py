"""--predict: the non-negative fit per layer type recovers a latency that is a known linear combination."""

import numpy as np
import pytest

from mnet_compile.errors import MnetError
from mnet_compile.pareto import PAPER_CONFIGS
from mnet_compile.pareto.predict import PREDICT_MEASURED, TERMS, estimate, features, fit, nnls


def test_features_are_the_cost_reports_mult_adds_by_layer_type():
    f = features(1.0, 224)
    assert f[0] == 1.0 and f[TERMS.index("fc")] == pytest.approx(1.024)  # 1024 x 1000
    assert f[TERMS.index("conv")] == pytest.approx(10.838016)  # 3x3x3x32 at 112x112
    assert f[1:].sum() == pytest.approx(568.7, abs=0.1)  # the paper's 569M


def test_fit_recovers_a_known_linear_combination():
    truth = {"constant": 0.2, "conv": 0.0, "depthwise": 0.03, "pointwise": 0.011, "fc": 0.05}
    latency = {c: float(features(*c) @ np.array([truth[t] for t in TERMS])) for c in PAPER_CONFIGS}
    coefficients = fit({c: latency[c] for c in PREDICT_MEASURED})
    assert all(v >= 0 for v in coefficients.values())
    for config in PAPER_CONFIGS:  # the stem and depthwise terms are collinear: only the estimates are identified
        assert estimate(coefficients, *config) == pytest.approx(latency[config], rel=1e-9)
    assert coefficients["pointwise"] == pytest.approx(0.011) and coefficients["fc"] == pytest.approx(0.05)


def test_nnls_clips_a_negative_slope_to_zero():
    a = np.array([[1.0, 0.0], [1.0, 1.0], [1.0, 2.0]])
    x = nnls(a, np.array([3.0, 2.0, 1.0]))  # least squares would give slope -1
    assert x.tolist() == pytest.approx([2.0, 0.0])


def test_fit_needs_two_measurements():
    with pytest.raises(MnetError, match="at least two"):
        fit({(1.0, 224): 5.0})
