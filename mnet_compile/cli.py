"""The `mnet-compile` command line: argument parsing and messages only; the work is in pipeline.py and below.

Starting it imports neither torch nor TVM, so `--help`, `targets` and `info` answer at once.
"""

from __future__ import annotations

import json
import os
import sys

import click
from click.core import ParameterSource

from .bench import BENCH_DIR, INT8_PEERS, PEERS
from .device.runtime import ArtifactError
from .errors import MnetError
from .models import MODELS, RESOLUTION_RULE


def _log(message: str) -> None:
    click.echo(message, err=True)


def _options(*decorators):
    """Several click options as one decorator (each option is declared once, below, and shared)."""

    def apply(f):
        for decorator in reversed(decorators):
            f = decorator(f)
        return f

    return apply


TARGET = click.option("--target", default="x86", show_default=True,
                      help="Target preset (`mnet-compile targets` lists them), or your own preset file: path/to/board.json.")
MODEL = click.option("--model", default="mobilenet_v1", show_default=True, help=f"Built-in architecture: {', '.join(MODELS)}.")
ALPHA = click.option("--alpha", default="1.0", show_default=True, help="Width multiplier, a number in (0, 1].")
RESOLUTION = click.option("--resolution", default="224", show_default=True, help=f"Input size: {RESOLUTION_RULE}.")
CLASSES = click.option("--classes", default=1000, show_default=True, type=int, help="Number of output classes.")
SOURCE = click.option("--from", "source", type=click.Path(),
                      help="A trained model file instead of a built-in model: .onnx, .tflite or .pt2 (torch.export).")
INPUT_SHAPE = click.option("--input-shape", "source_shape", help="Fix a --from file's dynamic input dims, e.g. 1,3,224,224.")
QUANTIZE = click.option("--quantize", type=click.Choice(["int8"]),
                        help="Post-training quantization of a built-in model (TFLite's int8 scheme; MobileNet v1, v2).")
CALIBRATION = click.option("--calibration", type=click.Path(),
                           help="Folder of images (or .npy inputs) to calibrate --quantize on [default: a seeded synthetic set].")
FUSE_BLOCKS = click.option("--fuse-blocks/--no-fuse-blocks", default=None,
                           help="CPU: a stride-1 depthwise conv on 28+ rows and its 1x1 conv as one kernel (graph/blocks.py) "
                                "[default: on for float32 models on x86].")
MODEL_OPTIONS = _options(TARGET, MODEL, ALPHA, RESOLUTION, CLASSES, SOURCE, INPUT_SHAPE, QUANTIZE, CALIBRATION, FUSE_BLOCKS)


def _given(ctx: click.Context, options: dict) -> dict:
    """The options the user typed: a request can then refuse those it would ignore (--alpha with --from)."""
    return {name: value for name, value in options.items() if ctx.get_parameter_source(name) != ParameterSource.DEFAULT}


class _Main(click.Group):
    """`mnet-compile [OPTIONS]` is short for `mnet-compile compile [OPTIONS]`."""

    def parse_args(self, ctx, args):
        if not args or (args[0] not in self.commands and args[0] not in ctx.help_option_names):
            args = ["compile", *args]
        return super().parse_args(ctx, args)


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
def cli():
    """Compile MobileNet (v1, v2, v3) or a trained model file into a native shared library plus manifest.

    \b
    mnet-compile --target x86 --alpha 0.25     compile (short for `mnet-compile compile ...`)
    mnet-compile info --alpha 0.25             cost report (the paper's tables)
    mnet-compile run DIR                       load an artifact, print top-5 and latency
    mnet-compile --model mobilenet_v3_small    another built-in architecture
    mnet-compile --from model.onnx             a trained model file (.onnx, .tflite, .pt2)
    mnet-compile run DIR cat.jpg --labels L    classify an image
    mnet-compile tune --alpha 0.25             tune the kernels (options go after the command)
    mnet-compile pareto --budget-ms 2          the most accurate alpha and resolution within 2 ms
    """


@cli.command("compile", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@MODEL_OPTIONS
@click.option("--weights", type=click.Path(), help="PyTorch state_dict file (torchvision names) for the built-in model.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the random weights (no --weights).")
@click.option("--output", type=click.Path(), help="Artifact folder [default: artifacts/<model>_<alpha>_<res>_<target>, or <file stem>_<target>].")
@click.option("--force", is_flag=True, help="Replace an existing artifact folder.")
@click.option("--no-tuned", "tuned", is_flag=True, flag_value=False, default=True, help="Ignore tuned schedule records.")
@click.option("--records", type=click.Path(), help="Tuned records from `mnet-compile tune` [default: the shipped ones].")
@click.option("--bundle", is_flag=True, help="Also write <output>.tar.gz: artifact, loader, C++ runner source, README.")
@click.option("--cc", help="Your (cross) C++ compiler for linking the .so [default: the preset's].")
@click.option("--sysroot", type=click.Path(), help="Sysroot of the device for --cc.")
@click.option("--sign", type=click.Path(), help="Ed25519 private key (`mnet-compile keygen`): sign the manifest (manifest.sig).")
@click.pass_context
def compile_(ctx, **options):
    """Compile a model into an artifact folder: model.so (weights inside) and manifest.json."""
    if ctx.args:  # `mnet-compile --alpha 0.25 tune`: the group's shortcut made these compile's arguments
        extra = ctx.args[0]
        if extra in cli.commands:
            raise click.UsageError(f"options go after the command: mnet-compile {extra} [OPTIONS] (those before it would be ignored)")
        if extra.startswith("-"):
            raise click.NoSuchOption(extra)
        raise click.UsageError(f"unexpected argument {extra!r}")
    from .pipeline import CompileRequest, compile_model

    out = compile_model(CompileRequest(**_given(ctx, options)), log=_log)
    click.echo(str(out))


@cli.command()
@_options(ALPHA, RESOLUTION, CLASSES)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def info(alpha, resolution, classes, as_json):
    """Per-layer mult-adds and parameters of MobileNet v1, with the paper's Table 2 shares and equation 5 ratios."""
    from .models.cost import cost_report, format_cost_report

    report = cost_report(alpha, resolution, classes)
    click.echo(json.dumps(report, indent=2) if as_json else format_cost_report(report))


@cli.command()
def targets():
    """List the target presets."""
    from .targets import load_preset, preset_names

    for name in preset_names():
        preset = load_preset(name)
        click.echo(f"{name:16} {preset.arch:8} {preset.description}")


@cli.command()
@click.argument("artifact", type=click.Path())
@click.argument("image", type=click.Path(), required=False)
@click.option("--input", "input_path", type=click.Path(), help="A .npy input of the manifest's shape and dtype.")
@click.option("--labels", type=click.Path(), help="Class names, one per line (as many as the model's classes).")
@click.option("--repeat", default=50, show_default=True, type=click.IntRange(min=1), help="Timed runs for the latency.")
@click.option("--public-key", type=click.Path(), help="Refuse the artifact unless its manifest is signed by this Ed25519 key.")
def run(artifact, image, input_path, labels, repeat, public_key):
    """Load an artifact with the device runtime loader, print the top-5 and the latency.

    IMAGE (JPEG, PNG, ...) is decoded, resized, center-cropped and normalized as the manifest says.
    """
    import numpy as np

    from .device.runtime import load, preprocess

    model = load(artifact, public_key=public_key)
    names = None
    if labels:
        from .device.images import read_labels

        names = read_labels(labels, model.manifest["output"]["shape"][-1])
    if image and input_path:
        raise MnetError("give an image or --input, not both")
    if image:
        from .device.images import load_image

        x = preprocess(load_image(image), model.manifest)
    elif input_path:
        try:
            x = np.load(input_path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise MnetError(f"cannot read input {input_path}: {exc}") from None
    else:
        x = np.random.default_rng(0).standard_normal(model.input_shape).astype(model.input_dtype)
    for rank, (index, prob) in enumerate(model.classify(x, k=5), 1):
        click.echo(f"{rank}. class {index:5d}  p={prob:.4f}" + (f"  {names[index]}" if names else ""))
    timing = model.benchmark(repeat=repeat, x=x)
    click.echo(f"latency: median {timing['median_ms']:.3f} ms, p90 {timing['p90_ms']:.3f} ms ({repeat} runs)")


# How `tune` writes the options it was given back into the command that resumes it (after Ctrl-C).
_FLAGS = {"target": "--target", "model": "--model", "alpha": "--alpha", "resolution": "--resolution",
          "classes": "--classes", "source": "--from", "source_shape": "--input-shape", "quantize": "--quantize",
          "calibration": "--calibration"}


def _resume_hint(request, given: dict, trials: int, work_dir, rpc, key, minutes, cold_cache=False) -> tuple[str, str]:
    """(the work folder, absolute; the line that says it is kept and how to resume) for `tune`."""
    import shlex
    from pathlib import Path

    from .targets import load_preset

    folder = os.path.abspath(work_dir or Path("artifacts") / "tuning" / load_preset(request.target).name)
    args = []
    for name, flag in _FLAGS.items():
        if name in given:
            value = given[name]
            if name == "source_shape" and isinstance(value, tuple):
                value = ",".join(map(str, value))
            is_file = name == "source" or (name == "target" and str(value).endswith(".json"))
            args += [flag, os.path.abspath(value) if is_file else str(value)]
    args += ["--trials", str(trials), "--work-dir", folder]
    args += (["--rpc", rpc] if rpc else []) + (["--key", key] if key else []) + (["--minutes", f"{minutes:g}"] if minutes else [])
    if "fuse_blocks" in given:
        args.append("--fuse-blocks" if given["fuse_blocks"] else "--no-fuse-blocks")
    args += ["--cold-cache"] if cold_cache else []
    return folder, f"the records measured so far are kept in {folder}; resume with: mnet-compile tune {shlex.join(args)}"


@cli.command()
@MODEL_OPTIONS
@click.option("--trials", default=500, show_default=True, type=int, help="Total trials in the work folder, spread over all kernels.")
@click.option("--work-dir", type=click.Path(), help="Records folder [default: artifacts/tuning/<target>]; reruns resume it.")
@click.option("--rpc", metavar="HOST:PORT", help="TVM RPC tracker: time the candidates on a board (built here with the preset's cross compiler).")
@click.option("--key", help="Device key the board's RPC server registered with the tracker (with --rpc).")
@click.option("--minutes", type=click.FloatRange(min=0, min_open=True), help="Time budget: no new batch starts after it.")
@click.option("--cold-cache", is_flag=True, help="Time each candidate with its weights flushed from the caches (as a board without a big last-level cache runs a model).")
@click.pass_context
def tune(ctx, trials, work_dir, rpc, key, minutes, cold_cache, **options):
    """Tune the model's kernels with MetaSchedule (XGBoost cost model); apply with `--records WORK_DIR`.

    The target must run on this machine, unless a board measures through TVM's RPC tracker:

    \b
    python -m tvm.exec.rpc_tracker --port 9190                     (this machine)
    python -m tvm.exec.rpc_server --tracker HOST:9190 --key rpi4   (the board)
    mnet-compile tune --target rpi4 --rpc HOST:9190 --key rpi4
    """
    from .pipeline import CompileRequest, tune_model

    if trials < 1:
        raise MnetError(f"--trials must be a positive integer, got {trials}")
    request = CompileRequest(**_given(ctx, options))
    bar = click.progressbar(length=trials, label="tuning", file=sys.stderr, show_pos=True)

    def progress(done, total, estimate_ms):  # the bar appears once tuning starts, after all checks
        bar.label = f"tuning (kernel time estimate {estimate_ms:.3f} ms)" if estimate_ms else "tuning"
        bar.update(min(done, total) - bar.pos)

    from .schedule import interrupt

    _, resume = _resume_hint(request, _given(ctx, options), trials, work_dir, rpc, key, minutes, cold_cache)
    try:
        with interrupt.deferred(resume, _log):  # Ctrl-C stops at a safe point, never inside TVM's C++
            work_dir = tune_model(request, trials, work_dir, progress=progress, log=_log, rpc=rpc, key=key, minutes=minutes,
                                  cold_cache=cold_cache)
    except KeyboardInterrupt:
        raise Interrupted(resume) from None
    finally:
        if bar.pos:
            bar.render_finish()
    click.echo(str(work_dir))


@cli.command()
@click.option("--configs", default="1.0-224,0.5-224,0.25-224,0.25-128", show_default=True, help="ALPHA-RESOLUTION list.")
@click.option("--peers", default=",".join(PEERS), show_default=True,
              help=f"Runtimes to measure; int8 rows on request: {', '.join(INT8_PEERS)} (ours; LiteRT/XNNPACK "
                   "on a full-integer .tflite of our int8 model; ONNX Runtime on its own QDQ model).")
@click.option("--rounds", default=3, show_default=True, type=click.IntRange(min=1), help="Interleaved rounds (one process per runtime each).")
@click.option("--runs", default=50, show_default=True, type=click.IntRange(min=1), help="Timed inferences per process.")
@click.option("--threads", default=2, show_default=True, type=click.IntRange(min=1), help="Threads for every runtime.")
@click.option("--no-tuned", is_flag=True, help="Benchmark our build without the shipped tuned records.")
@click.option("--records", type=click.Path(), help="Benchmark our build with these tuning records (a `tune` folder).")
@click.option("--profile", "with_profile", is_flag=True, help="Also print each config's per-kernel profile.")
@click.option("--json", "json_path", type=click.Path(), help="Also write the result rows to this JSON file.")
def bench(configs, peers, rounds, runs, threads, no_tuned, records, with_profile, json_path):
    """Latency against PyTorch, ONNX Runtime, OpenVINO and TFLite (XNNPACK) on the same weights."""
    from .bench import format_results, run_benchmark
    from .models import check_alpha, check_resolution

    try:
        parsed = [(check_alpha(c.split("-")[0]), check_resolution(c.split("-")[1])) for c in configs.split(",")]
    except IndexError:
        raise MnetError(f"--configs must look like 1.0-224,0.25-128, got {configs!r}") from None
    names = peers.split(",")
    unknown = set(names) - set(PEERS) - set(INT8_PEERS)
    if unknown or "mnet-compile" not in names:
        raise MnetError(f"--peers must include mnet-compile and be among {', '.join(PEERS + INT8_PEERS)}")
    if records and no_tuned:
        raise MnetError("--records applies tuned records, --no-tuned builds without any: give one, not both")
    rows, peak = run_benchmark(parsed, names, rounds, runs, threads, tuned=not no_tuned, log=_log, records=records)
    click.echo(format_results(rows, peak, threads))
    if with_profile:
        from .bench import artifact_folder
        from .profile import format_profile, profile

        for alpha, resolution in parsed:
            folder = str(artifact_folder(BENCH_DIR, alpha, resolution) / "artifact")
            click.echo(f"\n{alpha}-{resolution}:\n" + format_profile(profile(folder, runs, threads, peak), peak))
    if json_path:
        try:
            with open(json_path, "w") as f:
                json.dump({"threads": threads, "fma_peak_gflops": peak, "rows": rows}, f, indent=2)
        except OSError as exc:
            raise MnetError(f"cannot write {json_path}: {exc.strerror}") from None


@cli.command()
@TARGET
@click.option("--configs", help="ALPHA-RESOLUTION list [default: the paper's 16, alpha 1.0/0.75/0.5/0.25 x 224/192/160/128].")
@click.option("--budget-ms", type=click.FloatRange(min=0, min_open=True), help="Name the most accurate configuration within this latency.")
@click.option("--output", type=click.Path(), help="With --budget-ms: compile the chosen configuration into this folder.")
@click.option("--bundle", is_flag=True, help="With --output: also write the device bundle <output>.tar.gz.")
@click.option("--force", is_flag=True, help="With --output: replace an existing folder.")
@click.option("--predict", is_flag=True, help="Measure 5 configurations (corners and centre), estimate the others from the per-layer cost.")
@click.option("--rpc", metavar="HOST:PORT", help="TVM RPC tracker: time on a board (built here with the preset's cross compiler).")
@click.option("--key", help="Device key the board's RPC server registered with the tracker (with --rpc).")
@click.option("--plot", "plot_path", type=click.Path(), help="Write the trade-off as a PNG (needs mnet-compile[plot]).")
@click.option("--json", "json_path", type=click.Path(), help="Also write the rows to this JSON file.")
@click.option("--rounds", default=3, show_default=True, type=click.IntRange(min=1), help="Interleaved rounds (one process or session per configuration each).")
@click.option("--runs", default=50, show_default=True, type=click.IntRange(min=1), help="Timed inferences per configuration and round.")
@click.option("--threads", default=2, show_default=True, type=click.IntRange(min=1), help="TVM threads (here; a board uses its own).")
@click.option("--no-tuned", is_flag=True, help="Build without tuned schedule records.")
@click.option("--records", type=click.Path(), help="Tuned records from `mnet-compile tune` [default: the shipped ones].")
@click.option("--remeasure", is_flag=True, help="Ignore the cached results (and replace them).")
@click.pass_context
def pareto(ctx, target, configs, budget_ms, output, bundle, force, predict, rpc, key, plot_path, json_path, rounds, runs,
           threads, no_tuned, records, remeasure):
    """Which alpha and resolution give the best accuracy within a latency budget on the target.

    Builds and times the configurations (as `bench` does; through RPC for boards), joins each with its
    published ImageNet top-1 (the paper's Tables 6, 7 and 9, else TF-slim's table), prints the table and the
    Pareto front. Results are cached per target: another --budget-ms or --plot measures nothing again.

    \b
    mnet-compile pareto --target x86 --budget-ms 2 --plot pareto.png
    mnet-compile pareto --target rpi4 --rpc HOST:9190 --key rpi4 --budget-ms 33 --output best --bundle
    """
    from .pareto import PAPER_CONFIGS
    from .pareto.front import choose, format_table, short_source
    from .pareto.sweep import SweepOptions, check_output, compile_choice, parse_configs, sweep

    if output and budget_ms is None:
        raise MnetError("--output compiles the configuration --budget-ms chooses: give --budget-ms too")
    if (bundle or force) and not output:
        raise MnetError("--bundle and --force apply to the folder --output names")
    if rpc and ctx.get_parameter_source("threads") != ParameterSource.DEFAULT:
        raise MnetError("--threads sets the threads here; a board's RPC server runs with its own (TVM_NUM_THREADS there)")
    parsed = parse_configs(configs) if configs is not None else list(PAPER_CONFIGS)
    if output:
        check_output(target, output, force)
    opts = SweepOptions(target=target, configs=parsed, rounds=rounds, runs=runs, threads=threads, tuned=not no_tuned,
                        records=records, rpc=rpc, key=key, predict=predict, remeasure=remeasure)
    result = sweep(opts, log=_log)
    where = result["context"]
    click.echo(f"target {where['target']} on {where['where']}; schedules: {where['schedules']}; "
               f"{'threads ' + str(where['threads']) + ', ' if where['threads'] else ''}median of {rounds} rounds x {runs} runs")
    click.echo(f"measured now: {', '.join(result['measured']) or 'none'}; from the cache ({result['cache']}): "
               f"{', '.join(result['cached']) or 'none'}")
    if predict:
        terms = ", ".join(f"{t} {c:.3g}" for t, c in result["coefficients"].items())
        click.echo(f"latencies marked ~ are ESTIMATES (--predict): ms = fit over mult-adds (M) per layer type: {terms}")
    click.echo(format_table(result["rows"]))
    if budget_ms is not None:
        row = choose(result["rows"], budget_ms)
        how = "estimated" if row["estimated"] else "measured"
        click.echo(f"within {budget_ms:g} ms: {row['config']} ({row['top1']:.1f}% top-1, {short_source(row['source'])}; "
                   f"{row['latency_ms']:.3f} ms {how})")
        if output:
            click.echo(str(compile_choice(row, target, output, not no_tuned, records, bundle, force, log=_log)))
    if json_path:
        try:
            with open(json_path, "w") as f:
                json.dump(result, f, indent=1)
        except OSError as exc:
            raise MnetError(f"cannot write {json_path}: {exc.strerror}") from None
    if plot_path:
        from .pareto.plot import plot

        title = f"MobileNet v1 on {where['target']} ({where['where']})"
        plot(result["rows"], plot_path, title)
        click.echo(f"plot: {plot_path}")


@cli.command("profile")
@click.argument("artifact", type=click.Path())
@click.option("--runs", default=50, show_default=True, type=click.IntRange(min=1), help="Inferences timed.")
@click.option("--threads", default=2, show_default=True, type=click.IntRange(min=1), help="TVM threads.")
def profile_command(artifact, runs, threads):
    """Where the time goes: per fused kernel, time, calls, GFLOP/s, share of peak, record or default."""
    from .bench import cpu_description, fma_peak_gflops
    from .profile import format_profile, profile
    from .device.runtime import read_manifest

    read_manifest(artifact)  # a clean error for a folder that is no artifact
    peak = fma_peak_gflops(threads)
    click.echo(f"CPU: {cpu_description()}")
    click.echo(format_profile(profile(artifact, runs, threads, peak), peak))


@cli.command()
@click.argument("path", type=click.Path())
@click.option("--force", is_flag=True, help="Replace existing key files.")
def keygen(path, force):
    """Make an Ed25519 key pair for signing artifacts: PATH (private, mode 600) and PATH.pub.

    \b
    mnet-compile keygen keys/builder
    mnet-compile --alpha 0.25 --sign keys/builder          sign at build time
    mnet-compile run DIR --public-key keys/builder.pub     refuse unless signed by that key
    """
    from .device.signing import describe_public_key, generate_key

    private, public = generate_key(path, force=force)
    _log(f"private key {private} (keep it secret), public key {public} (copy it to the devices), "
         f"fingerprint {describe_public_key(public)}")
    click.echo(str(public))


@cli.command()
@click.argument("artifact", type=click.Path())
@click.option("--key", "key", required=True, type=click.Path(), help="Ed25519 private key (`mnet-compile keygen`).")
def sign(artifact, key):
    """Sign an existing artifact folder (its files are checked against the manifest first)."""
    from .device.signing import sign_artifact

    click.echo(str(sign_artifact(artifact, key)))


class Interrupted(MnetError):
    """Ctrl-C: the message says what was kept and how to resume (exit code 130)."""


def main(argv=None) -> int:
    """Entry point: one-line errors and non-zero exits instead of tracebacks."""
    try:
        cli.main(args=argv, prog_name="mnet-compile", standalone_mode=False)
    except click.exceptions.Abort:
        _log("error: aborted")
        return 130
    except Interrupted as exc:
        _log(f"interrupted: {exc}")
        return 130
    except click.ClickException as exc:  # bad usage: one line too, `--help` shows the usage
        _log(f"error: {exc.format_message()}")
        return exc.exit_code
    except (MnetError, ArtifactError) as exc:
        _log(f"error: {exc}")
        return 1
    except KeyboardInterrupt:
        _log("error: interrupted")
        return 130
    except Exception as exc:  # a bug, not bad input: still one line, the traceback on request
        if os.environ.get("MNET_DEBUG"):
            raise
        _log(f"internal error: {type(exc).__name__}: {' '.join(str(exc).split())[:300]} (MNET_DEBUG=1 shows the traceback)")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
