"""The artifact folder export writes: its manifest, and the format the device loader reads."""

import hashlib
import json

import tvm

from mnet_compile.device import runtime
from mnet_compile.export import artifact
from mnet_compile.resources import data_dir
from mnet_compile.schedule.records import family_for


def test_loader_reads_the_format_export_writes():
    """runtime.py restates the format because it stands alone on the device: the two must not drift."""
    assert (runtime.FORMAT_VERSION, runtime.LIBRARY, runtime.MANIFEST) == (
        artifact.FORMAT_VERSION, artifact.LIBRARY, artifact.MANIFEST)


def test_manifest(compiled):
    out = compiled(0.25, 128, seed=7)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["format_version"] == artifact.FORMAT_VERSION
    assert (manifest["model"], manifest["alpha"], manifest["resolution"], manifest["classes"]) == ("mobilenet_v1", 0.25, 128, 1000)
    assert manifest["weights"] == {"source": "seed", "seed": 7}
    assert manifest["input"] == {"name": "x", "shape": [1, 3, 128, 128], "dtype": "float32", "layout": "NCHW"}
    assert manifest["output"] == {"shape": [1, 1000], "dtype": "float32", "kind": "logits"}
    assert manifest["preprocessing"]["resize_shorter"] == 146 and manifest["preprocessing"]["center_crop"] == [128, 128]
    assert manifest["target"]["preset"] == "x86" and manifest["target"]["arch"] == "x86_64"
    assert manifest["target"]["tvm"]["kind"] == "llvm"
    family = manifest["schedules"]["family"]
    assert family == family_for(tvm.target.Target(manifest["target"]["tvm"])) and manifest["schedules"]["kernels"] > 0
    shipped = (data_dir("schedules") / family).is_dir()
    assert manifest["schedules"]["records"] == (f"schedules/{family}" if shipped else None)
    assert set(manifest["files"]) == {"model.so"}
    assert manifest["files"]["model.so"]["sha256"] == hashlib.sha256((out / "model.so").read_bytes()).hexdigest()
    for key in ("tvm_version", "tvm_ffi_version", "created"):
        assert manifest[key]
