"""MetaSchedule tuning of a fused module's kernels, in this process, resumable from its work_dir.

    db = tune(fused_mod, target, work_dir, trials, progress=cb)   # cb(done, total, est_ms | None)

`fused_mod` may also be a list of fused modules (several alphas/resolutions): their kernels are merged by
workload, with call counts summed as task weights. `trials` is the total for work_dir: records already
there count toward it, so rerunning after an interruption continues instead of starting over.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Sequence

import tvm
import tvm_ffi
from tvm import relax
from tvm.s_tir import meta_schedule as ms
from tvm.s_tir.meta_schedule.builder import BuilderResult, PyBuilder
from tvm.s_tir.meta_schedule.measure_callback import PyMeasureCallback
from tvm.s_tir.meta_schedule.runner import EvaluatorConfig, PyRunner
from tvm.s_tir.meta_schedule.runner.local_runner import LocalRunnerFuture
from tvm.s_tir.meta_schedule.task_scheduler import PyTaskScheduler
from tvm.s_tir.meta_schedule.runner.utils import alloc_argument_common, run_evaluator_common
from tvm.ir.utils import derived_object
from tvm.target import Target

from . import rules
from .schedule import kernel_mod, kernels

Progress = Callable[[int, int, "float | None"], None]
# A smaller population than MetaSchedule's default (512): on 2 cores the search itself, not measuring,
# dominated each iteration (~20 s a task).
SEARCH = dict(population_size=128, init_measured_ratio=0.2, init_min_unmeasured=32, genetic_num_iters=3)
EVALUATOR = EvaluatorConfig(number=1, repeat=5, min_repeat_ms=20, enable_cpu_cache_flush=False)


@derived_object
class InProcessBuilder(PyBuilder):
    """Builds each candidate with tvm.compile in this process (the stock LocalBuilder spawns workers that
    each import every tensor intrinsic: ~50 s a candidate on this machine). `fcompile` links the .so (a
    preset's cross compiler, for a device measured through RPC); None: this machine's compiler."""

    def __init__(self, fcompile=None) -> None:
        super().__init__()
        self.fcompile = fcompile

    def build(self, build_inputs):
        from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

        results = []
        for inp in build_inputs:
            try:
                mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(inp.mod)
                rt_mod = tvm.compile(mod, target=inp.target)
                path = os.path.join(tempfile.mkdtemp(prefix="mnet-ms-"), "kernel.so")
                rt_mod.export_library(path, fcompile=self.fcompile)
                results.append(BuilderResult(path, None))
            except Exception as exc:  # a candidate that does not compile is a failed trial, not a crash
                results.append(BuilderResult(None, f"{type(exc).__name__}: {exc}"[:2000]))
        return results


@derived_object
class InProcessRunner(PyRunner):
    """Times each built kernel in this process (TVM's thread pool: set TVM_NUM_THREADS)."""

    def __init__(self, evaluator: EvaluatorConfig = EVALUATOR) -> None:
        super().__init__()
        self.evaluator = evaluator
        self.fill = tvm.get_global_func("tvm.contrib.random.random_fill_for_measure")

    def run(self, runner_inputs):
        futures = []
        for inp in runner_inputs:
            try:
                rt_mod = tvm.runtime.load_module(inp.artifact_path)
                dev = tvm.runtime.device(inp.device_type, 0)
                info = [a.as_json() for a in inp.args_info]
                args = alloc_argument_common(self.fill, dev, info, 1)
                costs = run_evaluator_common(rt_mod, dev, self.evaluator, args)
                costs = sorted(costs)[len(costs) // 2 : len(costs) // 2 + 1]  # the median: noisy machine
                futures.append(LocalRunnerFuture(res=costs))
            except Exception as exc:
                futures.append(LocalRunnerFuture(error_message=f"{type(exc).__name__}: {exc}"[:2000]))
        return futures


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
class DurableScheduler(PyTaskScheduler):
    """Joins every finished batch before picking the next task, so each batch's records reach the
    database at once (the stock gradient scheduler holds a whole first round, then the latest batch of
    every task, in memory: an interrupted run loses them). After one round over all tasks, the task with
    the largest (call count x best latency) / (batches so far + 1) goes next."""

    def __init__(self, best: list, weights: list) -> None:
        super().__init__()
        self.best, self.weights, self.rounds, self.calls = best, weights, [0] * len(weights), 0

    def next_task_id(self) -> int:
        outer = self._outer()
        alive = [i for i, task in enumerate(outer.tasks_) if not task.is_terminated]
        for i in alive:
            outer.touch_task(i)
        alive = [i for i in alive if not outer.tasks_[i].is_terminated]
        if not alive:
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
        mod = rules.annotate(mod, target)
        counts = call_counts(mod)
        for gv, func in kernels(mod):
            kmod = kernel_mod(func)
            key = tvm_ffi.structural_hash(kmod)
            entry = tasks.get(key)
            if entry is not None and tvm_ffi.structural_equal(entry[1], kmod):
                entry[2] += counts.get(gv.name_hint, 1)
            else:
                tasks[key] = [gv.name_hint, kmod, counts.get(gv.name_hint, 1)]
    return [tuple(t) for t in tasks.values()]


def repair_database(work_dir: str) -> None:
    """Drop a last line cut short by an interrupted write, so the JSON database loads."""
    for name in ("database_workload.json", "database_tuning_record.json"):
        path = os.path.join(work_dir, name)
        if not os.path.exists(path):
            continue
        with open(path, "rb") as f:
            lines = f.read().splitlines(keepends=True)
        good = []
        for line in lines:
            try:
                json.loads(line)
                good.append(line if line.endswith(b"\n") else line + b"\n")
            except ValueError:
                pass
        if len(good) != len(lines) or (lines and not lines[-1].endswith(b"\n")):
            with open(path, "wb") as f:
                f.writelines(good)


def open_database(work_dir: str) -> ms.database.JSONDatabase:
    os.makedirs(work_dir, exist_ok=True)
    repair_database(work_dir)
    return ms.database.JSONDatabase(work_dir=work_dir, module_equality="structural")


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
) -> ms.database.JSONDatabase:
    """Tune every kernel of `fused_mod` (or of each module in a list) for `target`, `trials` in total.

    builder / runner: MetaSchedule's (default: InProcessBuilder, InProcessRunner; remote.py's for a device)."""
    mods = [fused_mod] if isinstance(fused_mod, tvm.IRModule) else list(fused_mod)
    tasks = extract(mods, target)
    db = open_database(work_dir)
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
    ms.tune.tune_tasks(
        tasks=contexts,
        task_weights=weights,
        work_dir=work_dir,
        max_trials_global=remaining,
        num_trials_per_iter=per_iter,
        builder=builder if builder is not None else InProcessBuilder(),
        runner=runner if runner is not None else InProcessRunner(),
        database=db,
        cost_model=ms.CostModel.create("xgb", num_tuning_cores=num_threads),
        measure_callbacks=callbacks,
        task_scheduler=DurableScheduler(best, weights),
    )
    return db


def tune_model(request, trials: int, work_dir: str, progress: Progress | None = None, log=print, rpc=None, key=None):
    """`mnet-compile tune`: tune the kernels of the model a CompileRequest names, for its target, into work_dir.

    rpc="HOST:PORT" and key: measure on a device of that key through the TVM RPC tracker (remote.py),
    candidates cross-compiled here; the target then need not run on this machine."""
    import platform

    from .build import check_source, import_model, progress_log
    from .errors import MnetError
    from .passes import fuse
    from .targets import load_preset

    preset = load_preset(request.target)
    target = preset.tvm_target()
    builder = runner = None
    if rpc is not None or key is not None:
        if rpc is None:
            raise MnetError("--key names a device on an RPC tracker; give the tracker with --rpc HOST:PORT")
        from .remote import remote_measure

        builder, runner = remote_measure(preset, rpc, key, log)  # checks the tracker and the key first
    elif target.kind.name != "llvm" or preset.arch != platform.machine():
        raise MnetError(f"target {preset.name} does not run on this {platform.machine()} machine, so it cannot be tuned here")
    mod, _, _ = import_model(request, check_source(request), target, progress_log(log))
    log(f"tuning {trials} trials into {work_dir} (rerun to resume)")
    try:
        return tune(fuse(mod), target, work_dir, trials, progress=progress, builder=builder, runner=runner)
    except Exception:
        if runner is not None and runner.failure is not None:  # the tracker or device failed: one line
            raise runner.failure from None
        raise
