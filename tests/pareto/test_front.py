"""The Pareto front and the choice for a budget, on fixed numbers."""

import pytest

from mnet_compile.errors import MnetError
from mnet_compile.pareto.front import choose, format_table, pareto_front, short_source


def row(config, latency, top1):
    return {"config": config, "latency_ms": latency, "top1": top1, "mult_adds": 10**6, "params": 10**5}


ROWS = [
    row("a", 1.0, 50.0),
    row("b", 2.0, 60.0),
    row("c", 1.5, 55.0),
    row("d", 2.5, 58.0),   # slower and less accurate than b
    row("e", 1.0, 45.0),   # as fast as a, less accurate
    row("f", 0.5, None),   # the fastest, but no published accuracy
    row("g", 3.0, 65.0),
]


def test_front_keeps_only_the_unbeaten_fastest_first():
    assert pareto_front(ROWS) == ["a", "c", "b", "g"]


def test_exact_ties_both_stay_on_the_front():
    rows = [row("x", 1.0, 50.0), row("y", 1.0, 50.0), row("z", 2.0, 49.0)]
    assert sorted(pareto_front(rows)) == ["x", "y"]


@pytest.mark.parametrize("budget, chosen", [(1.0, "a"), (1.49, "a"), (1.5, "c"), (2.4, "b"), (2.9, "b"), (3.0, "g"), (100, "g")])
def test_choice_is_the_most_accurate_within_the_budget(budget, chosen):
    assert choose(ROWS, budget)["config"] == chosen


def test_equal_accuracy_chooses_the_faster():
    rows = [row("slow", 2.0, 60.0), row("fast", 1.2, 60.0), row("other", 0.9, 55.0)]
    assert choose(rows, 5.0)["config"] == "fast"
    assert pareto_front(rows) == ["other", "fast"]


def test_budget_below_every_configuration_is_a_clear_error():
    with pytest.raises(MnetError, match=r"no configuration runs within 0\.8 ms: the fastest, a, takes 1\.000 ms"):
        choose(ROWS, 0.8)  # f (0.5 ms) has no accuracy, so it is neither chosen nor named


def test_no_accuracy_at_all_is_an_error():
    with pytest.raises(MnetError, match="published accuracy"):
        choose([row("f", 0.5, None)], 10)


def test_table_marks_the_front_and_estimates():
    rows = [dict(r, top5=None, source=None, note="no figure") for r in ROWS[:3]]
    rows[1]["estimated"] = True
    rows[0]["records"] = "20/24"
    lines = format_table(rows).splitlines()
    assert lines[1].split()[:6] == ["a", "1.0M", "0.10M", "1.000", "20/24", "50.0"] and " yes " in lines[1]
    assert "~2.000" in lines[2]


def test_short_source():
    assert short_source("Howard et al. 2017, MobileNets, arXiv:1704.04861 (https://arxiv.org/abs/1704.04861), Table 6") == "paper Table 6"
    assert short_source("TF-slim MobileNet v1 table (...): https://github.com/x") == "TF-slim table"
