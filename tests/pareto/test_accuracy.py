"""The shipped accuracy table: 16 configurations, a source on every row, the paper's figures where it has them."""

import json

from mnet_compile.pareto import PAPER_CONFIGS
from mnet_compile.pareto.accuracy import FILE, accuracy, published_rows
from mnet_compile.resources import data_dir

# Howard et al. 2017 (arXiv:1704.04861): Table 6 (width at 224), Table 7 (resolution at alpha 1.0), Table 9 (0.50-160).
PAPER = {(1.0, 224): 70.6, (0.75, 224): 68.4, (0.5, 224): 63.7, (0.25, 224): 50.6,
         (1.0, 192): 69.1, (1.0, 160): 67.2, (1.0, 128): 64.4, (0.5, 160): 60.2}
TF_SLIM_URL = "https://github.com/tensorflow/models/blob/02c04f49a188ba9a515100a3375a6359f3fffef1/research/slim/nets/mobilenet_v1.md"


def test_every_row_cites_a_source():
    rows = published_rows()
    assert len(rows) == len(PAPER) + 16
    for row in rows:
        assert row["source"].startswith(("Howard et al. 2017, MobileNets, arXiv:1704.04861", "TF-slim")), row
        assert 0 < row["top1"] < 100 and (row["top5"] is None or row["top1"] < row["top5"] < 100), row
    tf_slim = [r for r in rows if r["source"].startswith("TF-slim")]
    assert all(TF_SLIM_URL in r["source"] and r["top5"] is not None for r in tf_slim)
    assert {(r["alpha"], r["resolution"]) for r in tf_slim} == set(PAPER_CONFIGS)
    assert json.loads((data_dir("tables") / FILE).read_text())["description"]  # the file says what it holds


def test_the_paper_wins_where_it_has_a_figure():
    for config in PAPER_CONFIGS:
        got = accuracy(*config)
        if config in PAPER:
            assert got["top1"] == PAPER[config] and "arXiv:1704.04861" in got["source"] and got["top5"] is None
            table = "Table 9" if config == (0.5, 160) else "Table 6" if config[1] == 224 and config[0] != 1.0 else "Table"
            assert table in got["source"]
        else:
            assert got["source"].startswith("TF-slim") and got["top5"] is not None


def test_tf_slim_figures_spot_checks():
    assert accuracy(0.75, 160) == {"top1": 65.3, "top5": 86.0, "source": accuracy(0.75, 160)["source"]}
    assert accuracy(0.25, 128)["top1"] == 41.5 and accuracy(0.25, 128)["top5"] == 66.3


def test_no_figure_is_invented():
    got = accuracy(0.3, 224)
    assert got["top1"] is None and got["top5"] is None and got["source"] is None
    assert got["note"] == "no published ImageNet accuracy for MobileNet v1 0.3-224"
    assert accuracy(1.0, 96)["top1"] is None
