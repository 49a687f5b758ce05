"""`mnet-compile pareto`: the configurations measured (or taken from the cache), joined with their cost and
published accuracy, estimated where asked (--predict), on the Pareto front or not; the chosen one compiled."""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import MnetError
from ..models import check_alpha, check_resolution
from ..models.cost import cost_report
from ..targets import load_preset
from . import PAPER_CONFIGS, config_name
from .accuracy import accuracy
from .front import pareto_front
from .predict import PREDICT_MEASURED, estimate, fit
from .timing import ResultCache, build, context, measure_here, measure_remote, records_applied


@dataclass
class SweepOptions:
    target: str = "x86"
    configs: list = field(default_factory=lambda: list(PAPER_CONFIGS))
    rounds: int = 3
    runs: int = 50
    threads: int = 2
    tuned: bool = True
    records: str | None = None
    rpc: str | None = None
    key: str | None = None
    predict: bool = False
    remeasure: bool = False
    workdir: str | None = None  # default: artifacts/pareto/<target>


def parse_configs(text: str) -> list[tuple[float, int]]:
    """"1.0-224,0.25-128" -> [(1.0, 224), (0.25, 128)], checked like --alpha and --resolution, no repeats."""
    configs = []
    for item in (text or "").split(","):
        alpha, sep, resolution = item.strip().partition("-")
        if not sep:
            raise MnetError(f"--configs takes ALPHA-RESOLUTION items such as 1.0-224,0.25-128; got {item.strip()!r}")
        config = (check_alpha(alpha), check_resolution(resolution))
        if config not in configs:
            configs.append(config)
    return configs


def _measurer(opts: SweepOptions, preset, log):
    """configs -> {config: summary}: built here, timed here or on the board of --rpc/--key."""
    workdir = Path(opts.workdir or Path("artifacts") / "pareto" / preset.name)
    remote_config = None
    if opts.rpc is not None:
        from ..schedule.remote import checked_device

        remote_config, _ = checked_device(preset, opts.rpc, opts.key, log, "measuring")

    def measure(configs):
        folders = build(configs, opts.target, workdir, opts.tuned, opts.records, log)
        if remote_config is not None:
            results = measure_remote(remote_config, folders, opts.rounds, opts.runs, log)
        else:
            results = measure_here(folders, opts.rounds, opts.runs, opts.threads, log)
        return {config: {**result, "records": records_applied(folders[config])} for config, result in results.items()}

    return measure


def sweep(opts: SweepOptions, measurer=None, log=print) -> dict:
    """{"rows": [...], "front": [...], "context": the cache key fields, "coefficients": the --predict fit or
    None, "measured": configs timed now, "cached": configs taken from the cache, "cache": its file}.

    measurer(configs) -> {config: {"median_ms", "p90_ms", "runs"}} replaces building and timing (tests)."""
    preset = load_preset(opts.target)
    if opts.records and not opts.tuned:
        raise MnetError("--records applies tuned records, --no-tuned builds without any: give one, not both")
    if opts.key is not None and opts.rpc is None:
        raise MnetError("--key names a device on an RPC tracker; give the tracker with --rpc HOST:PORT")
    if opts.rpc is None and not preset.runs_here:
        raise MnetError(f"target {preset.name} does not run on this {platform.machine()} machine: time it on the "
                        "board with --rpc HOST:PORT --key KEY")
    if opts.rpc is not None:
        from ..schedule.remote import RemoteConfig

        where, threads = f"RPC key {RemoteConfig.from_args(opts.rpc, opts.key).key}", None
    else:
        from ..bench import cpu_description

        where, threads = cpu_description(), opts.threads
    schedules = "none (--no-tuned)" if not opts.tuned else f"records {Path(opts.records).absolute()}" if opts.records else "shipped"
    ctx = context(preset, where, schedules, threads, opts.rounds, opts.runs)
    to_measure = list(dict.fromkeys(PREDICT_MEASURED)) if opts.predict else opts.configs
    cache = ResultCache(preset.name)
    results = {c: cache.get(ctx, *c) for c in to_measure} if not opts.remeasure else {c: None for c in to_measure}
    missing = [c for c, result in results.items() if result is None]
    if missing:
        measured = (measurer or _measurer(opts, preset, log))(missing)
        for config in missing:
            results[config] = measured[config]
            cache.put(ctx, *config, measured[config])
        cache.save()
    coefficients = fit({c: r["median_ms"] for c, r in results.items()}) if opts.predict else None
    rows = []
    for alpha, resolution in opts.configs:
        totals = cost_report(alpha, resolution)["totals"]
        row = {"config": config_name(alpha, resolution), "alpha": alpha, "resolution": resolution,
               "mult_adds": totals["mult_adds"], "params": totals["params"]}
        result = results.get((alpha, resolution))
        if result is not None:
            row.update(latency_ms=result["median_ms"], p90_ms=result["p90_ms"], estimated=False,
                       records=result.get("records"))
        else:
            row.update(latency_ms=estimate(coefficients, alpha, resolution), p90_ms=None, estimated=True, records=None)
        rows.append({**row, **accuracy(alpha, resolution)})
    front = pareto_front(rows)
    for row in rows:
        row["on_front"] = row["config"] in front
    return {"rows": rows, "front": front, "context": ctx, "coefficients": coefficients,
            "measured": [config_name(*c) for c in missing], "cached": [config_name(*c) for c in to_measure if c not in missing],
            "cache": str(cache.path)}


def check_output(target: str, output: str, force: bool) -> None:
    """Fail before measuring when --output could not be written (it exists and --force is not given, ...)."""
    from ..pipeline import CompileRequest, output_dir

    output_dir(CompileRequest(target=target, output=output, force=force), load_preset(target))


def compile_choice(row: dict, target: str, output: str, tuned: bool, records: str | None, bundle: bool, force: bool,
                   log) -> Path:
    """The chosen configuration compiled into `output` (the `compile` path: manifest, --bundle)."""
    from ..pipeline import CompileRequest, compile_model

    request = CompileRequest(alpha=row["alpha"], resolution=row["resolution"], target=target, output=output,
                             force=force, tuned=tuned, records=records, bundle=bundle)
    return compile_model(request, log=log)
