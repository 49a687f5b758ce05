"""Shared by the pareto tests: a private results cache, and a fake measurer that records what it was asked."""

import pytest

from mnet_compile.models.cost import cost_report


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Every test gets its own results cache (MNET_CACHE), so none sees another's measurements."""
    monkeypatch.setenv("MNET_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


class FakeMeasurer:
    """configs -> made-up latencies (a fixed function of the mult-adds); `calls` lists what each call got."""

    def __init__(self):
        self.calls = []

    def __call__(self, configs):
        self.calls.append(list(configs))
        out = {}
        for alpha, resolution in configs:
            ms = 0.1 + 0.01 * cost_report(alpha, resolution)["totals"]["mult_adds"] / 1e6
            out[(alpha, resolution)] = {"median_ms": ms, "p90_ms": 1.1 * ms, "runs": 5}
        return out


@pytest.fixture
def fake():
    return FakeMeasurer()
