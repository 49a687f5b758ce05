"""The orchestrator: a request -> the model, loaded once -> an artifact folder (`compile_model`) or tuned
records (`tune_model`). Each step is a plain function of a lower layer; the CLI only parses into a CompileRequest."""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import MnetError
from .models import check_alpha, check_classes, check_model, check_resolution
from .targets import Preset, load_preset

# What a built-in model gets when the request leaves a field out; a --from file brings its own.
BUILT_IN_DEFAULTS = {"model": "mobilenet_v1", "alpha": 1.0, "resolution": 224, "classes": 1000, "seed": 0}


@dataclass
class CompileRequest:
    """What the user asked for, validated on construction. None means "not given" (see BUILT_IN_DEFAULTS)."""

    alpha: float | None = None
    resolution: int | None = None
    classes: int | None = None
    target: str = "x86"  # a preset name or a preset file (path/to/board.json)
    weights: str | None = None
    seed: int | None = None
    output: str | None = None
    force: bool = False
    tuned: bool = True  # apply tuned schedule records: --records DIR, else the preset's shipped ones
    records: str | None = None  # a `mnet-compile tune` work folder
    bundle: bool = False  # also write <output>.tar.gz for the device
    cc: str | None = None  # the user's (cross) compiler instead of the preset's
    sysroot: str | None = None  # the device's sysroot for that compiler
    model: str | None = None  # a built-in architecture (models.MODELS)
    source: str | None = None  # --from: a trained model file (.onnx, .tflite, .pt2) instead of a built-in model
    source_shape: str | tuple | None = None  # --input-shape: fixes the file's dynamic input dims
    sign: str | None = None  # --sign: an Ed25519 private key file; writes manifest.sig (device/signing.py)
    quantize: str | None = None  # "int8": post-training quantization (graph/quantize.py)
    calibration: str | None = None  # --calibration: a folder of images or .npy inputs (calibration.py)
    fuse_blocks: bool | None = None  # --[no-]fuse-blocks: a depthwise conv and its 1x1 as one kernel (graph/blocks.py)

    def __post_init__(self):
        from .frontends import parse_shape

        self.source_shape = parse_shape(self.source_shape)
        if self.source_shape and not self.source:
            raise MnetError("--input-shape applies to a model file given with --from")
        if self.quantize not in (None, "int8"):
            raise MnetError(f"--quantize supports int8, not {self.quantize!r}")
        if self.calibration and not self.quantize:
            raise MnetError("--calibration applies to --quantize int8")
        if self.quantize and self.source:
            raise MnetError("--quantize applies to the built-in models, not to a model file given with --from")
        if self.records and not self.tuned:
            raise MnetError("--records applies tuned records, --no-tuned builds without any: give one, not both")
        if self.source:
            if self.model is not None:
                raise MnetError("--model chooses a built-in architecture; a model file given with --from brings its own")
            if self.weights:
                raise MnetError("--weights applies to the built-in models, not to a model file given with --from")
            for field in ("alpha", "resolution", "classes", "seed"):
                if getattr(self, field) is not None:
                    raise MnetError(f"--{field} applies to the built-in models; a model file given with --from brings its own")
            return
        if self.weights and self.seed is not None:
            raise MnetError("--seed draws random weights, --weights loads them: give one, not both")
        for field, default in BUILT_IN_DEFAULTS.items():
            if getattr(self, field) is None:
                setattr(self, field, default)
        self.model = check_model(self.model)
        self.alpha = check_alpha(self.alpha)
        self.resolution = check_resolution(self.resolution)
        self.classes = check_classes(self.classes)

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (1, 3, self.resolution, self.resolution)

    def artifact_name(self, preset: Preset) -> str:
        if self.source:
            return f"{Path(self.source).stem}_{preset.name}"
        suffix = f"_{self.quantize}" if self.quantize else ""
        return f"{self.model}_{self.alpha}_{self.resolution}{suffix}_{preset.name}"


def output_dir(request: CompileRequest, preset: Preset) -> Path:
    """The artifact folder, checked before any work is done: writable parent, no silent overwrite."""
    out = Path(request.output) if request.output else Path("artifacts") / request.artifact_name(preset)
    out = out.absolute()
    if out.exists() and not out.is_dir():
        raise MnetError(f"output {out} exists and is not a folder")
    if out.exists() and not request.force:
        raise MnetError(f"output folder {out} already exists; pass --force to replace it")
    parent = out.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MnetError(f"cannot create output folder {parent}: {exc.strerror}") from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise MnetError(f"output folder {parent} is not writable")
    return out


def records_database(request: CompileRequest, preset: Preset):
    """The tuned records to apply, and where they come from: --records DIR, the shipped records of the
    target's family (chosen from its features: x86-avx512, x86-avx2, arm-neon, ...), or none."""
    from .schedule.records import family_for, load_records, shipped_database

    if not request.tuned:
        return None, None
    if request.records:
        try:
            database = load_records(request.records)
        except Exception as exc:
            raise MnetError(f"cannot read tuning records in {request.records}: {' '.join(str(exc).split())[:200]}") from None
        if database is None:
            raise MnetError(f"no tuning records in {request.records} (expected the files `mnet-compile tune` writes)")
        return database, request.records
    family = family_for(preset.tvm)
    if (database := shipped_database(family)) is not None:
        return database, f"schedules/{family}"
    return None, None


def progress_log(log):
    """A step logger that prefixes the seconds since it was made."""
    start = time.perf_counter()
    return lambda message: log(f"[{time.perf_counter() - start:6.1f}s] {message}")


def load_model(request: CompileRequest, preset: Preset, step):
    """The loaded-model step of both compile and tune: the requested model as an optimized Relax module.

    Returns (module, input name, frontends.ModelInput of a --from file or None, the manifest's
    "quantization" entry or None). Bad input (a file that is no model, unfit --weights, a calibration folder
    without inputs) fails before the first step is logged.
    """
    from . import frontends
    from .graph import passes

    info = calibration = None
    if request.quantize:
        if preset.backend != "cpu":
            raise MnetError(f"--quantize int8 builds for CPU targets; {preset.name} is a {preset.backend} target")
        from .calibration import calibration_inputs

        calibration, calibrated_by = calibration_inputs(request.calibration, request.input_shape)
    if request.source:
        frontends.detect_format(request.source)
        step(f"importing {request.source} into Relax for {preset.tvm}")
        mod, info = frontends.load_model_file(request.source, request.source_shape)
        input_name = info.name
        step(f"{info.format} model: input '{info.name}' {info.shape} {info.dtype} {info.layout}, output {info.output_shape}")
    else:
        from .models import create_model

        model = create_model(request.model, request.alpha, request.classes, request.seed, request.weights)
        step(f"{request.model} alpha={request.alpha:g} resolution={request.resolution} for {preset.tvm}")
        step("importing with torch.export into Relax")
        mod = frontends.from_torch(model, request.input_shape)
        input_name = mod["main"].params[0].name
    if info is not None and info.integer is not None:  # a quantized file: its integer graph, for this target
        from .frontends.integer import to_relax
        from .schedule.rules.int8 import dot_form, pointwise_form

        if preset.backend != "cpu":
            raise MnetError(f"int8 models build for CPU targets; {preset.name} is a {preset.backend} target")
        step("int8 model: its integer graph (no float round trips)")
        model = info.integer
        mod = to_relax(model, dot_form(preset.tvm), pointwise_form(preset.tvm))
        return mod, input_name, info, _quantization(model, {"source": "model_file"})
    if not request.quantize:
        step("optimizing the graph (BatchNorm folding, constant folding, NHWC layout, channel padding)")
        return passes.optimize(mod, cpu_lanes(preset)), input_name, info, None
    from .graph.quantize import quantize_int8
    from .schedule.rules.int8 import dot_form, pointwise_form

    step("optimizing the graph (BatchNorm folding, constant folding, NHWC layout)")
    mod = passes.optimize(mod)
    step(f"quantizing to int8, calibrated on {calibrated_by['images']} {calibrated_by['source']} inputs")
    mod, model = quantize_int8(mod, calibration, dot_form(preset.tvm), pointwise_form(preset.tvm))
    quantization = _quantization(model, calibrated_by)
    return mod, input_name, info, quantization


def integer_model(request: CompileRequest):
    """The integer graph (frontends/integer.py) that `--quantize int8` builds for a built-in model request: the
    same model, graph passes and calibration inputs as compile_model, so the same records."""
    from . import frontends
    from .calibration import calibration_inputs
    from .graph import passes
    from .graph.quantize import quantize_int8
    from .models import create_model

    calibration, _ = calibration_inputs(request.calibration, request.input_shape)
    model = create_model(request.model, request.alpha, request.classes, request.seed, request.weights)
    return quantize_int8(passes.optimize(frontends.from_torch(model, request.input_shape)), calibration)[1]


def _quantization(model, calibration: dict) -> dict:
    """The manifest's "quantization" entry of an integer model (frontends/integer.py)."""
    from .frontends.integer import SCHEME

    return dict(SCHEME, calibration=calibration, input={
        "scale": model.input_scale, "zero_point": model.input_zero_point, "quantized_by": "model"},
        output={"scale": model.output_scale, "zero_point": model.output_zero_point, "dequantized_by": "model"})  # fmt: skip


def cpu_lanes(preset: Preset) -> int | None:
    """fp32 lanes of a CPU target's vector registers (channel counts are padded to them), None on a GPU."""
    from .schedule.rules import isa_for

    return isa_for(preset.tvm).lanes if preset.backend == "cpu" else None


def fuses_blocks(request: CompileRequest, preset: Preset, integer: bool) -> bool:
    """Whether depthwise + 1x1 blocks become one kernel (graph/blocks.py): as --fuse-blocks / --no-fuse-blocks
    say, on CPUs (the GPU schedules take one conv per kernel); by default for float32 models on x86, where it
    was measured to pay (README), not on ARM boards (not measured) nor for `integer` (int8) graphs."""
    if preset.backend != "cpu":
        return False
    if request.fuse_blocks is not None:
        return request.fuse_blocks
    return preset.arch == "x86_64" and not integer


def compile_model(request: CompileRequest, log=print) -> Path:
    """The main job: build the artifact folder for `request` and return its path."""
    from .export.artifact import make_manifest, write_artifact
    from .export import thread_pool
    from .export.executable import compile_executable
    from .schedule.records import family_for

    preset = load_preset(request.target)
    out = output_dir(request, preset)
    fcompile = preset.compiler(request.cc, request.sysroot)  # a missing compiler fails before the slow part
    signing_key = None
    if request.sign:  # a bad key fails before the slow part too
        from .device.signing import load_private_key

        signing_key = load_private_key(request.sign)
    step = progress_log(log)
    mod, input_name, info, quantization = load_model(request, preset, step)
    database, records = records_database(request, preset)
    family = family_for(preset.tvm)
    if records:
        step(f"compiling kernels (tuned records from {records}; schedule family {family})")
    elif request.tuned:
        step(f"compiling kernels (no tuned records for {family}: default schedules)")
    else:
        step("compiling kernels (--no-tuned: default schedules)")
    blocks = fuses_blocks(request, preset, integer=quantization is not None)
    executable, stats = compile_executable(mod, preset, database, blocks=blocks)
    default = stats["kernels"] - stats["tuned"] - stats["transferred"]
    step(f"tuned records applied to {stats['tuned']} of {stats['kernels']} kernels, transferred from nearby "
         f"kernels to {stats['transferred']}, default schedules for {default}")
    manifest = make_manifest(request, preset, input_name, info)
    if quantization:
        manifest["quantization"] = quantization
    manifest["schedules"] = {"family": family, "records": str(records) if records else None, **stats}
    step(f"exporting to {out}")

    def finish(tmp: Path):
        if signing_key is not None:
            from .device.signing import fingerprint, public_bytes, sign_folder

            sign_folder(tmp, signing_key)
            step(f"signed the manifest with key {fingerprint(public_bytes(signing_key))}")
        if request.bundle:
            from .device.bundle import write_bundle

            return [write_bundle(tmp, preset, name=out.name, dest_dir=tmp, shown=out.with_name(out.name + ".tar.gz")).name]
        return []

    link = thread_pool.link_options() if preset.backend == "cpu" else None  # CUDA builds run no CPU loops
    write_artifact(out, executable, manifest, fcompile, request.force, finish=finish, log=step, link=link)
    if request.bundle:
        step(f"device bundle {out.with_name(out.name + '.tar.gz')}")
    step("done")
    return out


def tune_model(request: CompileRequest, trials: int, work_dir: str | None = None, progress=None, log=print,
               rpc: str | None = None, key: str | None = None, minutes: float | None = None,
               cold_cache: bool = False) -> Path:
    """`mnet-compile tune`: tune the kernels of the requested model for its preset; returns the work folder.

    work_dir defaults to artifacts/tuning/<preset>; rerunning resumes it. rpc="HOST:PORT" and key: measure on
    a board of that key through TVM's RPC tracker (schedule/remote.py), candidates cross-compiled here.
    The search starts from the shipped records of the target's family, else the default schedules, and
    stops after `trials` or after `minutes`, whichever comes first. cold_cache: candidates are timed with
    their weights flushed from the caches before each run (schedule/measure.py, COLD_EVALUATOR).
    """
    from .graph.passes import fuse
    from .schedule.records import family_for, shipped_database
    from .schedule import interrupt
    from .schedule.tuning import tune

    preset = load_preset(request.target)
    work_dir = Path(work_dir or Path("artifacts") / "tuning" / preset.name).absolute()
    builder = runner = None
    if rpc is not None or key is not None:
        if rpc is None:
            raise MnetError("--key names a device on an RPC tracker; give the tracker with --rpc HOST:PORT")
        from .schedule.remote import remote_measure

        builder, runner = remote_measure(preset, rpc, key, log, cold_cache)  # checks the tracker and the key first
    elif not preset.runs_here:
        raise MnetError(f"target {preset.name} does not run on this {platform.machine()} machine, so it cannot be tuned here")
    mod, _, _, quantization = load_model(request, preset, progress_log(log))
    interrupt.check()
    log(f"tuning {trials} trials into {work_dir} (rerun to resume)")
    try:
        known = shipped_database(family_for(preset.tvm))
        tune(fuse(mod, fuses_blocks(request, preset, quantization is not None), preset.backend == "cpu"), preset.tvm, str(work_dir), trials, progress=progress, builder=builder, runner=runner,
             minutes=minutes, known=known, log=log, cold_cache=cold_cache)  # fmt: skip
    except Exception:
        if runner is not None and runner.failure is not None:  # the tracker or device failed: one line
            raise runner.failure from None
        raise
    return work_dir
