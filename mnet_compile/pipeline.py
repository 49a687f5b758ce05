"""Compile + export: model -> Relax -> optimized, scheduled kernels -> shared library + manifest, atomically."""

from __future__ import annotations

import datetime
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import MnetError
from .model import check_alpha, check_classes, check_resolution
from .resources import data_dir
from .runtime import FORMAT_VERSION, LIBRARY, MANIFEST, sha256

# ImageNet preprocessing of the torchvision/Keras MobileNets: RGB in [0, 1], then per-channel mean/std.
PREPROCESSING = {"channel_order": "RGB", "scale": 1 / 255, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


@dataclass
class CompileRequest:
    """What the user asked for; validated on construction."""

    alpha: float = 1.0
    resolution: int = 224
    classes: int = 1000
    target: str = "x86"
    weights: str | None = None
    seed: int = 0
    output: str | None = None
    force: bool = False
    tuned: bool = True  # apply tuned schedule records: --records DIR, else the preset's shipped ones
    records: str | None = None  # a `mnet-compile tune` work folder
    bundle: bool = False  # also write <output>.tar.gz for the device
    cc: str | None = None  # the user's (cross) compiler instead of the preset's
    sysroot: str | None = None  # the device's sysroot for that compiler
    model: str = "mobilenet_v1"  # a built-in architecture (architectures.MODELS)
    source: str | None = None  # --from: a trained model file (.onnx, .tflite, .pt2) instead of a built-in model
    source_shape: str | tuple | None = None  # --input-shape: fixes the file's dynamic input dims

    def __post_init__(self):
        from .architectures import check_model
        from .frontends import parse_shape

        self.alpha = check_alpha(self.alpha)
        self.resolution = check_resolution(self.resolution)
        self.classes = check_classes(self.classes)
        self.model = check_model(self.model)
        self.source_shape = parse_shape(self.source_shape)
        if self.source_shape and not self.source:
            raise MnetError("--input-shape applies to a model file given with --from")
        if self.source and self.model != "mobilenet_v1":
            raise MnetError("--model chooses a built-in architecture; a model file given with --from brings its own")
        if self.source and self.weights:
            raise MnetError("--weights applies to the built-in models, not to a model file given with --from")

    @property
    def name(self) -> str:
        if self.source:
            return f"{Path(self.source).stem}_{self.target}"
        return f"{self.model}_{self.alpha}_{self.resolution}_{self.target}"

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (1, 3, self.resolution, self.resolution)


def output_dir(request: CompileRequest) -> Path:
    """The artifact folder, checked before any work is done: writable parent, no silent overwrite."""
    out = Path(request.output) if request.output else Path("artifacts") / request.name
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


def compile_executable(mod, target, database=None):
    """Fuse, schedule and lower the optimized Relax module.

    Returns the VM executable and {"tuned": kernels scheduled from a record, "kernels": all kernels}.
    Each kernel gets a tuned record from `database`, else a default schedule (schedule.py, cuda.py).
    """
    import tvm

    from . import cuda, passes
    from .schedule import schedule_kernels

    gpu = cuda.is_cuda_target(target)
    stats = {"tuned": 0, "kernels": 0}

    @tvm.transform.module_pass(opt_level=0, name="MnetPipeline")
    def pipeline(mod, _ctx):
        mod = passes.fuse(mod)
        schedule = cuda.schedule_gpu if gpu else schedule_kernels
        mod, stats["tuned"], stats["kernels"] = schedule(mod, target, database)
        return passes.finalize(mod)

    with cuda.compile_scope(target) if gpu else target:
        return tvm.compile(mod, target, relax_pipeline=pipeline), stats


def records_database(request: CompileRequest, preset):
    """The tuned records to apply, and where they come from: --records DIR, the shipped family, or none."""
    from .records import load_records, shipped_database

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
    if preset.schedules and (database := shipped_database(preset.schedules)) is not None:
        return database, f"schedules/{preset.schedules}"
    return None, None


def write_artifact(out: Path, executable, manifest: dict, fcompile, force: bool) -> None:
    """Export into a temporary folder beside `out`, then rename it into place (the old one kept until then)."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    try:
        tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; the artifact gets the user's usual mode
        lib = tmp / LIBRARY
        try:
            executable.export_library(str(lib), fcompile=fcompile) if fcompile else executable.export_library(str(lib))
        except Exception as exc:
            raise MnetError(f"linking {LIBRARY} failed: {' '.join(str(exc).split())[:300]}") from None
        manifest["files"] = {LIBRARY: {"sha256": sha256(lib), "bytes": lib.stat().st_size}}
        with open(tmp / MANIFEST, "w") as f:
            json.dump(manifest, f, indent=2)
            f.write("\n")
        old = None
        if out.exists():
            if not force:
                raise MnetError(f"output folder {out} already exists; pass --force to replace it")
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            out.rename(old)
        tmp.rename(out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def make_manifest(request: CompileRequest, preset, target, input_name: str, info=None) -> dict:
    """The manifest; `info` (frontends.ModelInput) describes a --from model file, whose input it records as is."""
    import tvm
    import tvm_ffi

    weights = (
        {"source": "file", "path": os.path.abspath(request.weights), "sha256": sha256(Path(request.weights))}
        if request.weights
        else {"source": "seed", "seed": request.seed}
    )
    manifest = {
        "format_version": FORMAT_VERSION,
        "model": request.model,
        "alpha": request.alpha,
        "resolution": request.resolution,
        "classes": request.classes,
        "weights": weights,
        "input": {"name": input_name, "shape": list(request.input_shape), "dtype": "float32", "layout": "NCHW"},
        "preprocessing": PREPROCESSING,
        "output": {"shape": [1, request.classes], "dtype": "float32", "kind": "logits"},
        "target": {"preset": preset.name, "arch": preset.arch, "tvm": json.loads(str(target))},
        "tvm_version": tvm.__version__,
        "tvm_ffi_version": tvm_ffi.__version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if info is not None:
        source = {"format": info.format, "path": os.path.abspath(request.source), "sha256": sha256(Path(request.source))}
        manifest.update(
            model=Path(request.source).stem, alpha=None, resolution=info.resolution, classes=info.classes,
            weights={"source": "model_file"}, source=source, input=info.manifest_input(),
            preprocessing=dict(info.preprocessing),
            output={"shape": list(info.output_shape), "dtype": "float32", "kind": info.output_kind},
        )
    manifest["preprocessing"] = image_preprocessing(manifest["preprocessing"], manifest["input"])
    return manifest


def image_preprocessing(base: dict, input_info: dict) -> dict:
    """How an image becomes the input: resize the shorter side to crop*256/224 (bilinear), center-crop, normalize."""
    shape, layout = input_info["shape"], input_info.get("layout", "NCHW")
    height, width = (shape[1], shape[2]) if layout == "NHWC" else (shape[2], shape[3])
    return dict(base, resize_shorter=int(min(height, width) * 256 / 224), center_crop=[height, width])


def check_source(request: CompileRequest):
    """Fail fast on bad model input (a --from file that is not a model, unfit --weights); return the torch model."""
    from . import frontends
    from .architectures import build_architecture

    if request.source:
        frontends.detect_format(request.source)
        return None
    return build_architecture(request.model, request.alpha, request.classes, request.seed, request.weights)


def import_model(request: CompileRequest, model, target, step):
    """The requested model as an optimized Relax module, with its input name and (for --from files) file info."""
    from . import frontends, passes

    info = None
    if request.source:
        step(f"importing {request.source} into Relax for {target}")
        mod, info = frontends.load_model_file(request.source, request.source_shape)
        input_name = info.name
        step(f"{info.format} model: input '{info.name}' {info.shape} {info.dtype} {info.layout}, output {info.output_shape}")
    else:
        step(f"{request.model} alpha={request.alpha:g} resolution={request.resolution} for {target}")
        step("importing with torch.export into Relax")
        mod = frontends.from_torch(model, request.input_shape)
        input_name = mod["main"].params[0].name
    step("optimizing the graph (BatchNorm folding, constant folding, NHWC layout)")
    return passes.optimize(mod), input_name, info


def progress_log(log):
    """A step logger that prefixes the seconds since it was made."""
    start = time.perf_counter()
    return lambda message: log(f"[{time.perf_counter() - start:6.1f}s] {message}")


def compile_model(request: CompileRequest, log=print) -> Path:
    """The main job: build the artifact folder for `request` and return its path."""
    from .targets import load_preset

    preset = load_preset(request.target)
    out = output_dir(request)
    fcompile = preset.compiler(request.cc, request.sysroot)  # a missing compiler fails before the slow part
    target = preset.tvm_target()
    model = check_source(request)
    step = progress_log(log)
    mod, input_name, info = import_model(request, model, target, step)
    database, records = records_database(request, preset)
    step(f"compiling kernels ({f'tuned records from {records}' if records else 'no tuned records'})")
    executable, stats = compile_executable(mod, target, database)
    step(f"tuned records applied to {stats['tuned']} of {stats['kernels']} kernels")
    manifest = make_manifest(request, preset, target, input_name, info)
    manifest["schedules"] = {"records": str(records) if records else None, **stats}
    step(f"exporting to {out}")
    write_artifact(out, executable, manifest, fcompile, request.force)
    if request.bundle:
        from .bundle import write_bundle

        step(f"device bundle {write_bundle(out, preset)}")
    step("done")
    return out
