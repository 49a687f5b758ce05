"""Shipped tuning records: schedules/<family>/database_{workload,tuning_record}.json.gz (MetaSchedule
JSONDatabase format, gzipped: each workload is base64 JSON, 13x smaller so), keyed by kernel workload, so
every alpha/resolution sharing a layer shape reuses them. A tuning folder's plain .json files load too.

    db = shipped_database(family_for(target))   # read-only in-memory copy, or None
    prune("/work/tune_x86/work", "schedules/x86-avx2", top_k=3)
"""

from __future__ import annotations

import gzip
import os
import shutil
import tempfile

import tvm_ffi
from tvm.s_tir import meta_schedule as ms
from tvm.target import Target

from ..resources import data_dir
from .rules import isa_for
from .rules.amx import register_named

WORKLOADS = "database_workload.json"
RECORDS = "database_tuning_record.json"


def family_for(target: Target) -> str:
    """Record family of a target, from its features: x86-avx512, x86-avx2, arm-neon, generic, or cuda."""
    return "cuda" if target.kind.name == "cuda" else isa_for(target).name


def json_database(directory: str, allow_missing: bool = True) -> ms.database.JSONDatabase:
    """MetaSchedule's JSON database of a folder, the AMX intrinsics its records name registered first."""
    path = os.path.join(directory, RECORDS)
    if os.path.isfile(path):
        with open(path) as f:
            register_named(f.read())
    return ms.database.JSONDatabase(path_workload=os.path.join(directory, WORKLOADS), path_tuning_record=path,
                                    allow_missing=allow_missing, module_equality="structural")  # fmt: skip


def _has(directory, suffix: str = "") -> bool:
    return all(os.path.isfile(os.path.join(directory, f + suffix)) for f in (WORKLOADS, RECORDS))


def _unique_workloads(db) -> list:
    seen: dict[int, list] = {}
    for rec in db.get_all_tuning_records():
        mod = rec.workload.mod
        bucket = seen.setdefault(tvm_ffi.structural_hash(mod), [])
        if not any(tvm_ffi.structural_equal(w.mod, mod) for w in bucket):
            bucket.append(rec.workload)
    return [w for bucket in seen.values() for w in bucket]


def _copy_best(src, dst, top_k: int, keep=None) -> int:
    n = 0
    for workload in _unique_workloads(src):
        if keep is not None and not any(tvm_ffi.structural_equal(workload.mod, k) for k in keep):
            continue
        recs = src.get_top_k(workload, top_k)
        if not recs:
            continue
        target_wl = dst.commit_workload(workload.mod)
        for rec in recs:
            dst.commit_tuning_record(
                ms.database.TuningRecord(rec.trace, target_wl, rec.run_secs, rec.target, rec.args_info)
            )
            n += 1
    return n


def load_records(directory) -> ms.database.Database | None:
    """The records of a tuning folder (.json) or of a shipped one (.json.gz) as an in-memory database
    (the folder's files are never written), or None."""
    mem = ms.database.MemoryDatabase(module_equality="structural")
    if _has(directory):
        _copy_best(json_database(str(directory), allow_missing=False), mem, top_k=1 << 20)
        return mem
    if not _has(directory, ".gz"):
        return None
    with tempfile.TemporaryDirectory(prefix="mnet-records-") as tmp:
        for name in (WORKLOADS, RECORDS):
            with gzip.open(os.path.join(directory, name + ".gz"), "rb") as src, open(os.path.join(tmp, name), "wb") as dst:
                shutil.copyfileobj(src, dst)
        _copy_best(json_database(tmp, allow_missing=False), mem, top_k=1 << 20)
    return mem


def shipped_database(family: str) -> ms.database.Database | None:
    """The records shipped in schedules/<family>/, or None."""
    return load_records(data_dir("schedules") / family)


def prune(work_dir: str, out_dir: str, top_k: int = 3, keep=None) -> int:
    """Write the best `top_k` valid records per workload of a tuning work_dir to `out_dir` as shipped
    (.json.gz, replacing what is there), only for the kernel modules in `keep` if given (the kernels the
    builds use). Returns the number of records written."""
    src = json_database(work_dir)
    tmp = tempfile.mkdtemp(prefix="mnet-records-")
    try:
        dst = json_database(tmp)
        n = _copy_best(src, dst, top_k, keep)
        del dst
        os.makedirs(out_dir, exist_ok=True)
        for name in (WORKLOADS, RECORDS):
            with open(os.path.join(tmp, name), "rb") as f, open(os.path.join(tmp, name + ".gz"), "wb") as raw:
                with gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as z:  # reproducible bytes
                    shutil.copyfileobj(f, z)
            os.replace(os.path.join(tmp, name + ".gz"), os.path.join(out_dir, name + ".gz"))
            if os.path.exists(os.path.join(out_dir, name)):
                os.remove(os.path.join(out_dir, name))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return n
