"""Measuring candidates on this machine, in this process: MetaSchedule's builder and runner for `tuning.tune`.

The stock LocalBuilder/LocalRunner start worker pools whose every worker imports all tensor intrinsics (~50 s
a candidate on a 2-core machine); these build with tvm.compile and time with TVM's evaluator right here.
remote.py reuses the builder with a cross compiler and times on a board instead.
"""

from __future__ import annotations

import os
import tempfile

import tvm
from tvm.ir.utils import derived_object
from tvm.s_tir.meta_schedule.builder import BuilderResult, PyBuilder
from tvm.s_tir.meta_schedule.runner import EvaluatorConfig, PyRunner
from tvm.s_tir.meta_schedule.runner.local_runner import LocalRunnerFuture
from tvm.s_tir.meta_schedule.runner.utils import alloc_argument_common, run_evaluator_common

from . import interrupt, lowering
from .interrupt import INTERRUPTED

EVALUATOR = EvaluatorConfig(number=1, repeat=5, min_repeat_ms=20, enable_cpu_cache_flush=False)
# `tune --cold-cache`: each run alone, after the kernel's weights and output are flushed from every cache
# level, as a layer finds them in a whole-model run on a board without a large last-level cache.
COLD_EVALUATOR = EvaluatorConfig(number=1, repeat=20, min_repeat_ms=0, enable_cpu_cache_flush=True)


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
            if interrupt.requested():  # Ctrl-C: the rest of the batch is skipped, not failed
                results.append(BuilderResult(None, INTERRUPTED))
                continue
            try:
                mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(inp.mod)
                rt_mod = tvm.compile(mod, target=inp.target, tir_pipeline=lowering.NAME)
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
            if interrupt.requested():
                futures.append(LocalRunnerFuture(error_message=INTERRUPTED))
                continue
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
