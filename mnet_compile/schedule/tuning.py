"""MetaSchedule tuning of a fused module's kernels, in this process, resumable from its work_dir.

    db = tune(fused_mod, target, work_dir, trials, progress=cb)   # cb(done, total, est_ms | None)

`fused_mod` may also be a list of fused modules (several alphas/resolutions): their kernels are merged by
workload, with call counts summed as task weights. `trials` is the total for work_dir: records already
there count toward it, so rerunning after an interruption continues instead of starting over.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence

import tvm
import tvm_ffi
from tvm import relax
from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms
from tvm.s_tir.meta_schedule.builder import BuilderInput
from tvm.s_tir.meta_schedule.measure_callback import PyMeasureCallback
from tvm.s_tir.meta_schedule.runner import RunnerInput
from tvm.s_tir.meta_schedule.task_scheduler import PyTaskScheduler
from tvm.target import Target

from . import interrupt, rules
from .interrupt import INTERRUPTED
from .kernels import replayed
from .measure import COLD_EVALUATOR, EVALUATOR, InProcessBuilder, InProcessRunner
from .records import json_database
from .transfer import TransferIndex, transferred_schedule
from .tunable import tunable_kernels

Progress = Callable[[int, int, "float | None"], None]
# A smaller population than MetaSchedule's default (512): on 2 cores the search itself, not measuring,
# dominated each iteration (~20 s a task).
SEARCH = dict(population_size=128, init_measured_ratio=0.2, init_min_unmeasured=32, genetic_num_iters=3)


@derived_object
class ProgressCallback(PyMeasureCallback):
    """Counts trials and estimates the model's kernel time (sum of weight x best latency per task)."""

    def __init__(self, total: int, done: int, best: list, weights: list, progress: Progress | None) -> None:
        super().__init__()
        self.total, self.done, self.best, self.weights, self.progress = total, done, best, weights, progress

    def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
        self.done += len(runner_results)
        for res in runner_results:
            if res.error_msg is None and res.run_secs:
                sec = sum(float(s) for s in res.run_secs) / len(res.run_secs)
                if self.best[task_id] is None or sec < self.best[task_id]:
                    self.best[task_id] = sec
        if self.progress is not None:
            self.progress(self.done, self.total, estimate_ms(self.best, self.weights))


@derived_object
class SkipInterrupted(PyMeasureCallback):
    """Hands `callbacks` only the candidates measured before a Ctrl-C: a skipped candidate is no failure
    (MetaSchedule's AddToDatabase would record it as a 1e10 s trial, and a resumed run would count it)."""

    def __init__(self, callbacks: list) -> None:
        super().__init__()
        self.callbacks = callbacks

    def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
        keep = [i for i, (b, r) in enumerate(zip(builder_results, runner_results)) if INTERRUPTED not in (b.error_msg, r.error_msg)]
        if not keep:
            return
        if len(keep) < len(runner_results):
            measure_candidates = [measure_candidates[i] for i in keep]
            builder_results = [builder_results[i] for i in keep]
            runner_results = [runner_results[i] for i in keep]
        for callback in self.callbacks:
            callback.apply(task_scheduler, task_id, measure_candidates, builder_results, runner_results)


@derived_object
class DurableScheduler(PyTaskScheduler):
    """Joins every finished batch before picking the next task, so each batch's records reach the
    database at once (the stock gradient scheduler holds a whole first round, then the latest batch of
    every task, in memory: an interrupted run loses them). After one round over all tasks, the task with
    the largest (call count x best latency) / (batches so far + 1) goes next."""

    def __init__(self, best: list, weights: list, deadline: float | None = None) -> None:
        super().__init__()
        self.best, self.weights, self.rounds, self.calls = best, weights, [0] * len(weights), 0
        self.deadline = deadline  # time.monotonic() after which no batch starts

    def next_task_id(self) -> int:
        if self.deadline is not None and time.monotonic() >= self.deadline:
            return -1
        outer = self._outer()
        alive = [i for i, task in enumerate(outer.tasks_) if not task.is_terminated]
        for i in alive:
            outer.touch_task(i)
        alive = [i for i in alive if not outer.tasks_[i].is_terminated]
        if not alive or interrupt.requested():
            return -1
        fresh = [i for i in alive if self.rounds[i] == 0]
        if fresh:
            pick = fresh[0]
        else:
            def priority(i):
                if self.best[i] is None:
                    return float("inf") if self.rounds[i] < 3 else 0.0
                return self.weights[i] * self.best[i] / (self.rounds[i] + 1)

            pick = max(alive, key=priority)
        self.rounds[pick] += 1
        return pick


def estimate_ms(best: list, weights: list) -> float | None:
    if any(b is None for b in best):
        return None
    return 1000.0 * sum(b * w for b, w in zip(best, weights))


def call_counts(mod: tvm.IRModule) -> dict[str, int]:
    """How many times each kernel is called from the Relax functions (the task weight)."""
    counts: dict[str, int] = {}

    def visit(expr):
        if isinstance(expr, relax.Call) and expr.op.same_as(tvm.ir.Op.get("relax.call_tir")):
            name = expr.args[0].name_hint
            counts[name] = counts.get(name, 0) + 1

    for func in mod.functions.values():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
    return counts


def extract(fused_mods: Sequence[tvm.IRModule], target: Target) -> list[tuple[str, tvm.IRModule, int]]:
    """(name, kernel module, weight) for each distinct workload over all modules."""
    tasks: dict[int, list] = {}
    for mod in fused_mods:
        mod, found = tunable_kernels(mod, target)
        counts = call_counts(mod)
        for gv, _func, kmod in found:
            key = tvm_ffi.structural_hash(kmod)
            entry = tasks.get(key)
            if entry is not None and tvm_ffi.structural_equal(entry[1], kmod):
                entry[2] += counts.get(gv.name_hint, 1)
            else:
                tasks[key] = [gv.name_hint, kmod, counts.get(gv.name_hint, 1)]
    return [tuple(t) for t in tasks.values()]


def open_database(work_dir: str, log=None) -> ms.database.JSONDatabase:
    """The work folder's JSON database, after dropping (and reporting) damaged lines (workdir.py)."""
    from ..errors import MnetError
    from .workdir import repair_database

    os.makedirs(work_dir, exist_ok=True)
    for message in repair_database(work_dir):
        (log or print)(f"warning: {message}")
    try:
        return json_database(work_dir)
    except Exception as exc:  # a line that is JSON of the right shape but no record TVM can read
        raise MnetError(
            f"cannot read the tuning records in {work_dir} ({' '.join(str(exc).split())[:150]}); "
            f"move the folder aside to start afresh"
        ) from None


def count_records(db, kmods) -> tuple[int, list]:
    """(records of these workloads, best latency in seconds per workload or None)."""
    done, best = 0, []
    for kmod in kmods:
        if not db.has_workload(kmod):
            best.append(None)
            continue
        recs = db.get_top_k(db.commit_workload(kmod), 1 << 30)
        done += len(recs)
        secs = [sum(float(s) for s in r.run_secs) / len(r.run_secs) for r in recs if r.run_secs]
        best.append(min(secs) if secs else None)
    return done, best


def seed_defaults(db, tasks, target: Target, builder, runner, known=None) -> int:
    """Start every task that has no record yet from what is known, each measured here (never with the
    times `known` was measured with, elsewhere or before a rule changed): the best records of `known`
    (the shipped database) for its workload, else the record of the nearest known kernel refitted to it
    (transfer.py); and its derived default schedule. The search then evolves from the best of them, so
    its best record is never worse than the default. Returns the count of seeds."""
    index = TransferIndex(known) if known is not None else None
    seeded = 0
    for name, kmod, _weight in tasks:
        if interrupt.requested():  # Ctrl-C: the tasks not seeded yet are seeded when the run resumes
            break
        if db.has_workload(kmod):
            continue
        if known is not None and known.has_workload(kmod):
            starts = [replayed(rec.trace, kmod, name) for rec in known.get_top_k(known.commit_workload(kmod), 2)]
        else:
            starts = [transferred_schedule(index, kmod, target) if index is not None else None]
        starts.append(rules.default_schedule(kmod, target))
        seeded += sum(_measure_into(db, kmod, sch, target, builder, runner) for sch in starts if sch is not None)
    return seeded


def _measure_into(db, kmod, sch, target: Target, builder, runner) -> bool:
    """Build and time one schedule of `kmod`; commit it to `db` as a record. False if it failed."""
    (built,) = builder.build([BuilderInput(sch.mod, target)])
    if built.error_msg:
        return False
    args_info = ms.arg_info.ArgInfo.from_entry_func(sch.mod, remove_preproc=True)  # packed 1x1 weights
    device = "cpu" if target.kind.name == "llvm" else target.kind.name  # tvm.runtime.device knows no "llvm"
    (future,) = runner.run([RunnerInput(built.artifact_path, device, args_info)])
    result = future.result()
    if result.error_msg or not result.run_secs:
        return False
    db.commit_tuning_record(ms.database.TuningRecord(sch.trace, db.commit_workload(kmod), result.run_secs, target, args_info))
    return True


def tune(
    fused_mod,
    target: Target,
    work_dir: str,
    trials: int,
    progress: Progress | None = None,
    seed: int | None = None,
    num_threads: int = 2,
    num_trials_per_iter: int | None = None,
    builder=None,
    runner=None,
    minutes: float | None = None,
    known=None,
    log=None,
    cold_cache: bool = False,
) -> ms.database.JSONDatabase:
    """Tune every kernel of `fused_mod` (or of each module in a list) for `target`, `trials` in total,
    or until `minutes` have passed (no new batch starts after that).

    builder / runner: MetaSchedule's (default: InProcessBuilder, InProcessRunner; remote.py's for a device).
    known: a database whose records start the search (the shipped records of the target's family).
    cold_cache: time each candidate with its weights flushed from the caches (measure.COLD_EVALUATOR)."""
    deadline = time.monotonic() + 60 * minutes if minutes else None
    mods = [fused_mod] if isinstance(fused_mod, tvm.IRModule) else list(fused_mod)
    tasks = extract(mods, target)
    db = open_database(work_dir, log)
    builder = builder if builder is not None else InProcessBuilder()
    runner = runner if runner is not None else InProcessRunner(COLD_EVALUATOR if cold_cache else EVALUATOR)
    seed_defaults(db, tasks, target, builder, runner, known)
    interrupt.check()
    done, best = count_records(db, [t[1] for t in tasks])
    weights = [float(t[2]) for t in tasks]
    remaining = trials - done
    if progress is not None:
        progress(min(done, trials), trials, estimate_ms(best, weights))
    if remaining <= 0:
        return db
    per_iter = max(1, min(64, remaining // len(tasks), num_trials_per_iter or 64))
    contexts = [
        ms.TuneContext(
            mod=kmod,
            target=target,
            space_generator="post-order-apply",
            search_strategy=ms.search_strategy.EvolutionarySearch(**SEARCH),
            task_name=name,
            rand_state=-1 if seed is None else seed + i,
            num_threads=num_threads,
        )
        for i, (name, kmod, _) in enumerate(tasks)
    ]
    callbacks = list(ms.MeasureCallback.create("default"))
    callbacks.append(ProgressCallback(trials, done, best, weights, progress))
    interrupt.check()
    ms.tune.tune_tasks(
        tasks=contexts,
        task_weights=weights,
        work_dir=work_dir,
        max_trials_global=remaining,
        num_trials_per_iter=per_iter,
        builder=builder,
        runner=runner,
        database=db,
        cost_model=ms.CostModel.create("xgb", num_tuning_cores=num_threads),
        measure_callbacks=[SkipInterrupted(callbacks)],
        task_scheduler=DurableScheduler(best, weights, deadline),
    )
    interrupt.check()
    return db
