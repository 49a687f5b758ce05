"""A tuning work folder's JSON database files, checked line by line before MetaSchedule reads them.

MetaSchedule's JSONDatabase fails on a line that is not JSON; a line cut short by an interrupted write (or
damaged by hand) must not cost the whole folder, and must not disappear without a word either.
"""

from __future__ import annotations

import json
import os


def repair_database(work_dir: str) -> list[str]:
    """Drop lines that are not records (a last line cut short by an interrupted write, a damaged line), so
    the JSON database loads; keep them in <file>.damaged and return one message per file that lost lines.
    Records of a dropped workload line go too; those of later workloads are renumbered."""
    messages = []
    remap: list | None = None  # old workload index -> new index, or None where the workload line was dropped
    for name in ("database_workload.json", "database_tuning_record.json"):
        path = os.path.join(work_dir, name)
        if not os.path.exists(path):
            continue
        with open(path, "rb") as f:
            lines = f.read().splitlines(keepends=True)
        good, bad, orphans, changed = [], [], 0, False
        workloads = name == "database_workload.json"
        if workloads:
            remap = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                changed = True
                continue
            try:
                entry = json.loads(line)
                if workloads:
                    ok = isinstance(entry, list) and len(entry) == 2
                else:  # [index of its workload, [trace, run_secs, target, args_info]]
                    ok = (isinstance(entry, list) and len(entry) == 2 and type(entry[0]) is int and entry[0] >= 0
                          and isinstance(entry[1], list) and len(entry[1]) == 4)
            except ValueError:
                ok = False
            if not ok:
                bad.append((number, line))
                if workloads:
                    remap.append(None)
                continue
            if workloads:
                remap.append(len(good))
            elif remap is not None:
                new = remap[entry[0]] if entry[0] < len(remap) else None
                if new is None:
                    orphans += 1
                    bad.append((number, line))
                    continue
                if new != entry[0]:
                    line = json.dumps([new, entry[1]]).encode() + b"\n"
                    changed = True
            good.append(line if line.endswith(b"\n") else line + b"\n")
        if bad or changed or (lines and not lines[-1].endswith(b"\n")):
            if bad:
                with open(path + ".damaged", "ab") as f:
                    f.writelines(line if line.endswith(b"\n") else line + b"\n" for _, line in bad)
            with open(path, "wb") as f:
                f.writelines(good)
        if bad:
            numbers = ", ".join(str(n) for n, _ in bad[:5]) + (", ..." if len(bad) > 5 else "")
            why = ("a write cut short by an interruption" if [n for n, _ in bad] == [len(lines)] and not orphans
                   else f"{orphans} of them records of a dropped workload" if orphans else "not a record")
            messages.append(f"{path}: dropped {len(bad)} damaged line{'s' if len(bad) > 1 else ''} "
                            f"(line {numbers}: {why}), kept in {name}.damaged")
    return messages
