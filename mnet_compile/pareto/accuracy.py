"""Published ImageNet accuracy of MobileNet v1 configurations, from tables/imagenet_accuracy.json.

The file's rows are in order of preference (the paper's Tables 6, 7 and 9 first, then TF-slim's table); a
configuration takes its first row. None is invented: a configuration without a row has top1 None and a note.
"""

from __future__ import annotations

import json
from functools import lru_cache

from ..resources import data_dir

FILE = "imagenet_accuracy.json"


@lru_cache(maxsize=1)
def published_rows() -> tuple[dict, ...]:
    """Every row of the data file: alpha, resolution, top1, top5 (or None), source."""
    with open(data_dir("tables") / FILE) as f:
        return tuple(json.load(f)["rows"])


def accuracy(alpha: float, resolution: int) -> dict:
    """{"top1", "top5", "source"} of the preferred published row, or Nones and a "note" saying there is none."""
    for row in published_rows():
        if round(row["alpha"], 6) == round(alpha, 6) and row["resolution"] == resolution:
            return {"top1": row["top1"], "top5": row["top5"], "source": row["source"]}
    return {"top1": None, "top5": None, "source": None,
            "note": f"no published ImageNet accuracy for MobileNet v1 {alpha}-{resolution}"}
