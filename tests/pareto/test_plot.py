"""The PNG: two panels, every point with an accuracy labelled, the front drawn through the front's points."""

import sys

import pytest

from mnet_compile.errors import MnetError
from mnet_compile.pareto.plot import INSTALL_HINT, plot
from mnet_compile.pareto.sweep import SweepOptions, sweep

pytest.importorskip("matplotlib", reason="the plot needs matplotlib (pip install 'mnet-compile[plot]')")


def rows(fake, **options):
    return sweep(SweepOptions(configs=[*SweepOptions().configs, (0.3, 224)], **options), measurer=fake, log=lambda m: None)["rows"]


def test_plot_has_every_point_labelled_and_the_front(fake, tmp_path):
    data = rows(fake)
    path = tmp_path / "out" / "pareto.png"
    fig = plot(data, str(path), "test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 30_000
    left, right = fig.axes
    labelled = sorted(r["config"] for r in data if r["top1"] is not None)  # 0.3-224 has no accuracy: left out
    assert len(labelled) == 16
    assert sorted(t.get_text() for t in left.texts) == labelled and sorted(t.get_text() for t in right.texts) == labelled
    assert sum(len(c.get_offsets()) for c in left.collections) == 16
    (front_line,) = left.get_lines()
    front = sorted((r for r in data if r["on_front"]), key=lambda r: r["latency_ms"])
    assert list(front_line.get_xdata()) == [r["latency_ms"] for r in front]
    assert list(front_line.get_ydata()) == [r["top1"] for r in front]
    assert right.get_xscale() == "log" and "mult-adds" in right.get_xlabel()
    assert list(tmp_path.joinpath("out").iterdir()) == [path]  # no temporary file left


def test_labels_do_not_overlap(fake, tmp_path):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = plot(rows(fake), str(tmp_path / "p.png"), "test")
    renderer = FigureCanvasAgg(fig).get_renderer()  # the figure was closed: a fresh canvas of the same size
    for ax in fig.axes:
        boxes = [t.get_window_extent(renderer) for t in ax.texts]
        overlaps = [(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:] if a.overlaps(b)]
        assert not overlaps


def test_estimates_are_drawn_hollow(fake, tmp_path):
    fig = plot(rows(fake, predict=True), str(tmp_path / "p.png"), "test")
    faces = [c.get_facecolors() for c in fig.axes[0].collections]
    assert sum(len(f) == 0 or f[0][3] == 0 for f in faces) == 11  # 16 - 5 measured
    assert "estimated (--predict)" in [t.get_text() for t in fig.axes[0].get_legend().get_texts()]


def test_without_matplotlib_one_line_says_what_to_install(fake, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(MnetError) as info:
        plot(rows(fake), str(tmp_path / "p.png"), "test")
    assert str(info.value) == INSTALL_HINT and not (tmp_path / "p.png").exists()
