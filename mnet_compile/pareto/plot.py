"""The trade-off as a PNG (matplotlib, Agg): top-1 against measured latency with the Pareto front, and top-1
against mult-adds (the paper's cost model, its Figure 4), each point labelled alpha-resolution."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ..errors import MnetError

INSTALL_HINT = "the plot needs matplotlib: pip install 'mnet-compile[plot]'"
# Label positions tried in turn (offsets in points from the marker) until one overlaps nothing drawn yet.
OFFSETS = [(6, 4), (6, -12), (-8, 6), (-8, -13), (6, 12), (6, -20), (-8, 14), (-8, -21), (14, -4), (-14, -4)]


def _place_labels(ax, points, renderer) -> None:
    """Annotate each (x, y, label), right of the marker when that is free, else at the next free offset."""
    placed = [ax.transData.transform((x, y)) for x, y, _ in points]
    boxes = [(px - 4, py - 4, px + 4, py + 4) for px, py in placed]  # the markers themselves
    for x, y, label in points:
        for dx, dy in OFFSETS:
            text = ax.annotate(label, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=7,
                               ha="left" if dx > 0 else "right", va="bottom" if dy > 0 else "top")
            box = text.get_window_extent(renderer)
            free = all(box.x1 < b[0] or box.x0 > b[2] or box.y1 < b[1] or box.y0 > b[3] for b in boxes)
            if free or (dx, dy) == OFFSETS[-1]:
                boxes.append((box.x0, box.y0, box.x1, box.y1))
                break
            text.remove()


def plot(rows, path: str, title: str):
    """Write the two panels to `path` (atomically) and return the figure; rows without top-1 are left out."""
    try:
        import matplotlib
    except ImportError:
        raise MnetError(INSTALL_HINT) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

    shown = [r for r in rows if r.get("top1") is not None and r.get("latency_ms") is not None]
    if not shown:
        raise MnetError("nothing to plot: no configuration has a published accuracy")
    colors = {res: plt.cm.viridis(i / 3) for i, res in enumerate(sorted({r["resolution"] for r in rows}, reverse=True)[:4])}
    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 6), constrained_layout=True)
    for ax, key, scale, xlabel in ((left, "latency_ms", 1.0, "latency, median (ms)"),
                                   (right, "mult_adds", 1e-6, "mult-adds (millions)")):
        for r in shown:
            color = colors.get(r["resolution"], "gray")
            estimated = r.get("estimated") and key == "latency_ms"
            ax.scatter(r[key] * scale, r["top1"], s=36, zorder=3, edgecolors=color,
                       facecolors="none" if estimated else color)
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(xlabel)
        ax.set_ylabel("ImageNet top-1 (%)")
        ax.grid(True, which="both", alpha=0.3)
        ax.margins(x=0.12, y=0.08)
        handles = [Line2D([], [], ls="", marker="o", color=c, label=f"resolution {res}") for res, c in colors.items()]
        if key == "latency_ms":
            handles.append(Line2D([], [], color="crimson", label="Pareto front"))
            if any(r.get("estimated") for r in shown):
                handles.append(Line2D([], [], ls="", marker="o", mfc="none", color="gray", label="estimated (--predict)"))
        ax.legend(handles=handles, loc="lower right", fontsize=8)
    front = sorted((r for r in shown if r.get("on_front")), key=lambda r: r["latency_ms"])
    left.plot([r["latency_ms"] for r in front], [r["top1"] for r in front], drawstyle="steps-post",
              color="crimson", lw=1.5, zorder=2)
    left.set_title("accuracy against latency on the target", fontsize=10)
    right.set_title("accuracy against mult-adds (the paper's cost model)", fontsize=10)
    fig.suptitle(title, fontsize=11)
    fig.canvas.draw()  # the axes limits are final: labels can now be placed in display space
    renderer = fig.canvas.get_renderer()
    for ax, key, scale in ((left, "latency_ms", 1.0), (right, "mult_adds", 1e-6)):
        _place_labels(ax, [(r[key] * scale, r["top1"], r["config"]) for r in shown], renderer)
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".png")
        os.close(fd)
        fig.savefig(tmp, dpi=120)
        os.replace(tmp, path)
    except OSError as exc:
        if "tmp" in locals() and os.path.exists(tmp):
            os.unlink(tmp)
        raise MnetError(f"cannot write the plot {path}: {exc.strerror}") from None
    finally:
        plt.close(fig)
    return fig
