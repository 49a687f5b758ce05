"""The artifact folder: model.so (weights embedded) and manifest.json, written atomically.

device/runtime.py reads this format; it restates FORMAT_VERSION, LIBRARY and MANIFEST because it is copied onto
devices alone (tests/device/test_runtime.py keeps the two in step).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
from pathlib import Path

from ..errors import MnetError
from ..frontends.common import IMAGENET

FORMAT_VERSION = 1
LIBRARY = "model.so"
MANIFEST = "manifest.json"


def sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_artifact(out: Path, executable, manifest: dict, fcompile, force: bool, finish=None, log=None,
                   link: dict | None = None) -> None:
    """Export into a locked temporary folder beside `out`, then rename it into place (the old one kept until then).

    `link`: more keyword arguments of export_library (thread_pool.link_options(): sources to compile in).
    `finish(tmp)` adds to the finished folder before it goes into place (signature, bundle) and returns the
    names of files in it to move beside `out` (the bundle). Any failure leaves nothing new behind; folders
    left by killed builds are removed first (export/staging.py)."""
    from . import staging

    try:
        with staging.staging_folder(out, log) as tmp:
            umask = os.umask(0)
            os.umask(umask)
            tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; the artifact gets the user's usual mode
            lib = tmp / LIBRARY
            try:
                executable.export_library(str(lib), fcompile=fcompile, **(link or {}))
            except Exception as exc:
                raise MnetError(f"linking {LIBRARY} failed: {' '.join(str(exc).split())[:300]}") from None
            manifest["files"] = {LIBRARY: {"sha256": sha256(lib), "bytes": lib.stat().st_size}}
            with open(tmp / MANIFEST, "w") as f:
                json.dump(manifest, f, indent=2)
                f.write("\n")
            beside = tuple(finish(tmp) or ()) if finish else ()
            staging.commit(tmp, out, force, beside)
    except OSError as exc:  # a full disk, a lost mount: one line, and the staging folder is gone
        raise MnetError(f"cannot write the artifact {out}: {exc.strerror or exc}") from None


def make_manifest(request, preset, input_name: str, info=None) -> dict:
    """The manifest of a pipeline.CompileRequest built for `preset`; `info` (frontends.ModelInput) describes a
    --from model file, whose input it records as is."""
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
        "preprocessing": IMAGENET,
        "output": {"shape": [1, request.classes], "dtype": "float32", "kind": "logits"},
        "target": {"preset": preset.name, "arch": preset.arch, "tvm": json.loads(str(preset.tvm))},
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
