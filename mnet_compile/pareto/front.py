"""The Pareto front of accuracy against latency, the choice for a latency budget, and the printed table.

A row is a dict with at least "config", "latency_ms" and "top1" (None when no accuracy is published);
rows without an accuracy or a latency are never on the front and never chosen.
"""

from __future__ import annotations

from ..errors import MnetError


def _known(rows) -> list[dict]:
    return [r for r in rows if r.get("top1") is not None and r.get("latency_ms") is not None]


def pareto_front(rows) -> list[str]:
    """The configs no other row beats: none is at least as fast and as accurate and strictly better in one.
    Fastest first."""
    known = _known(rows)

    def beaten(r):
        return any(o["latency_ms"] <= r["latency_ms"] and o["top1"] >= r["top1"]
                   and (o["latency_ms"] < r["latency_ms"] or o["top1"] > r["top1"]) for o in known)

    return [r["config"] for r in sorted(known, key=lambda r: (r["latency_ms"], -r["top1"])) if not beaten(r)]


def choose(rows, budget_ms: float) -> dict:
    """The most accurate row within budget_ms (ties: the faster); MnetError when none fits."""
    known = _known(rows)
    if not known:
        raise MnetError("no configuration has both a latency and a published accuracy to choose from")
    within = [r for r in known if r["latency_ms"] <= budget_ms]
    if not within:
        fastest = min(known, key=lambda r: r["latency_ms"])
        raise MnetError(f"no configuration runs within {budget_ms:g} ms: the fastest, {fastest['config']}, "
                        f"takes {fastest['latency_ms']:.3f} ms")
    return max(within, key=lambda r: (r["top1"], -r["latency_ms"]))


def short_source(source: str) -> str:
    """"paper Table 6" or "TF-slim table" for the data file's long citations."""
    if source.startswith("TF-slim"):
        return "TF-slim table"
    return "paper " + source.rsplit("), ", 1)[-1] if "arXiv:1704.04861" in source else source


def format_table(rows) -> str:
    """Config, mult-adds, params, latency (estimates marked ~), kernels with a tuned record / all, top-1, top-5,
    on the front, accuracy source."""
    front = set(pareto_front(rows))
    lines = [f"{'config':9} {'mult-adds':>10} {'params':>7} {'latency ms':>11} {'records':>7} {'top-1':>6} {'top-5':>6}  "
             "front  accuracy source"]
    for r in rows:
        latency = "-" if r.get("latency_ms") is None else ("~" if r.get("estimated") else "") + f"{r['latency_ms']:.3f}"
        top1 = "-" if r.get("top1") is None else f"{r['top1']:.1f}"
        top5 = "-" if r.get("top5") is None else f"{r['top5']:.1f}"
        source = short_source(r["source"]) if r.get("source") else r.get("note", "")
        lines.append(f"{r['config']:9} {r['mult_adds'] / 1e6:9.1f}M {r['params'] / 1e6:6.2f}M {latency:>11} "
                     f"{r.get('records') or '-':>7} {top1:>6} "
                     f"{top5:>6}  {'yes' if r['config'] in front else '':5}  {source}")
    return "\n".join(lines)
