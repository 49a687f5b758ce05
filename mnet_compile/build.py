"""Compile + export: model -> Relax -> optimized, scheduled kernels -> shared library + manifest, atomically."""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import MnetError
from .model import check_alpha, check_classes, check_resolution
from .runtime import LIBRARY, MANIFEST, FORMAT_VERSION

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
    tuned: bool = True  # apply the shipped (or --records) tuned schedules

    def __post_init__(self):
        self.alpha = check_alpha(self.alpha)
        self.resolution = check_resolution(self.resolution)
        self.classes = check_classes(self.classes)

    @property
    def name(self) -> str:
        return f"mobilenet_v1_{self.alpha}_{self.resolution}_{self.target}"

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (1, 3, self.resolution, self.resolution)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


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


def compile_executable(mod, target, log=print):
    """Fuse, schedule and lower the optimized Relax module; return the VM executable."""
    import tvm

    from . import passes

    @tvm.transform.module_pass(opt_level=0, name="MnetPipeline")
    def pipeline(mod, _ctx):
        mod = passes.fuse(mod)
        return passes.finalize(mod)

    with target:
        return tvm.compile(mod, target, relax_pipeline=pipeline)


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


def make_manifest(request: CompileRequest, preset, target, input_name: str) -> dict:
    import tvm
    import tvm_ffi

    weights = (
        {"source": "file", "path": os.path.abspath(request.weights), "sha256": sha256(Path(request.weights))}
        if request.weights
        else {"source": "seed", "seed": request.seed}
    )
    return {
        "format_version": FORMAT_VERSION,
        "model": "mobilenet_v1",
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


def compile_model(request: CompileRequest, log=print) -> Path:
    """The main job: build the artifact folder for `request` and return its path."""
    from . import frontends, passes
    from .model import build_model
    from .targets import load_preset

    preset = load_preset(request.target)
    out = output_dir(request)
    fcompile = preset.compiler()  # fail on a missing cross compiler before the slow part
    target = preset.tvm_target()
    model = build_model(request.alpha, request.classes, request.seed, request.weights)  # checks --weights
    start = time.perf_counter()

    def step(message):
        log(f"[{time.perf_counter() - start:6.1f}s] {message}")

    step(f"MobileNet v1 alpha={request.alpha:g} resolution={request.resolution} for {target}")
    step("importing with torch.export into Relax")
    mod = frontends.from_torch(model, request.input_shape)
    input_name = mod["main"].params[0].name
    step("optimizing the graph (BatchNorm folding, constant folding, NHWC layout)")
    mod = passes.optimize(mod)
    step("compiling kernels")
    executable = compile_executable(mod, target, log=step)
    step(f"exporting to {out}")
    write_artifact(out, executable, make_manifest(request, preset, target, input_name), fcompile, request.force)
    step("done")
    return out
