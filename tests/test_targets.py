"""Target presets: the shipped ones are consistent, a user's own preset file is checked the same way."""

import dataclasses
import json

import pytest

from mnet_compile import targets
from mnet_compile.errors import MnetError
from mnet_compile.resources import data_dir
from mnet_compile.schedule.backends import BACKENDS

from .helpers import error_line, run_cli


def test_presets_are_consistent():
    for name in targets.preset_names():
        p = targets.load_preset(name)
        t = p.tvm
        host = t.host if p.backend == "cuda" else t
        assert p.arch in ("x86_64", "aarch64", "armv7l"), name
        if p.arch == "aarch64":
            assert host.attrs["mtriple"].startswith("aarch64") and p.cc == "aarch64-linux-gnu-g++", name
            assert p.qemu_cpu, name
        if p.cc:
            assert p.cc_install and p.cc.split("-g++")[0].replace("_", "-") in p.cc_install.replace("_", "-"), name
        assert "{tvm}" in p.runtime or "none as a wheel" in p.runtime, name  # the pin is not repeated here
    orin = targets.load_preset("jetson-orin")
    assert orin.backend == "cuda" and str(orin.tvm.attrs["arch"]) == "sm_87" and orin.tvm.host.attrs["mcpu"] == "cortex-a78ae"
    assert {targets.load_preset(n).backend for n in targets.preset_names()} == set(BACKENDS) == set(targets.BACKENDS.values())


def test_missing_cross_compiler_names_install_command():
    preset = targets.load_preset("arm_cpu")
    with pytest.raises(MnetError, match="nonexistent-g\\+\\+"):
        preset.compiler(cc="nonexistent-g++")
    broken = dataclasses.replace(preset, cc="nonexistent-g++", cc_install="apt-get install g++-aarch64-linux-gnu")
    with pytest.raises(MnetError, match="install it with: apt-get install g\\+\\+-aarch64-linux-gnu"):
        broken.compiler()


def shipped(name: str) -> dict:
    return json.loads((data_dir("targets") / f"{name}.json").read_text())


def test_own_preset_file_compiles(capsys, tmp_path):
    """--target path/to/board.json: named after the file, recorded in the manifest like a shipped preset."""
    board = tmp_path / "boards" / "my-board.json"
    board.parent.mkdir()
    board.write_text(json.dumps(dict(shipped("x86"), description="my own x86-64 box")))
    out = tmp_path / "art"
    code, stdout, _ = run_cli(capsys, "--target", board, "--alpha", "0.25", "--resolution", "32", "--output", out)
    assert code == 0 and stdout.strip() == str(out)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["target"]["preset"] == "my-board" and manifest["target"]["arch"] == "x86_64"


@pytest.mark.parametrize(
    "change, message",
    [
        ({"speed": "fast"}, "has unknown fields: speed"),
        ({"arch": None}, "'arch' must be str"),
        ({"description": "x" * 73}, "one line of at most 72 characters"),
        ({"description": "two\nlines"}, "one line of at most 72 characters"),
        ({"target": {"kind": "vulkan"}}, "target kind must be one of llvm, cuda, got 'vulkan'"),
        ({"target": {"kind": "llvm", "mcpu": 3}}, "TVM rejects its target"),
        (None, "lacks the field 'arch'"),
    ],
)
def test_own_preset_file_is_checked(capsys, tmp_path, change, message):
    spec = shipped("x86-avx512")
    if change is None:
        del spec["arch"]
    else:
        spec.update(change)
    board = tmp_path / "board.json"
    board.write_text(json.dumps(spec))
    code, _, err = run_cli(capsys, "--target", board, "--alpha", "0.25", "--output", tmp_path / "out")
    assert code == 1 and "target preset board" in error_line(err) and message in err
    assert not (tmp_path / "out").exists()


def test_unreadable_preset_files(capsys, tmp_path):
    (tmp_path / "broken.json").write_text("{not json")
    code, _, err = run_cli(capsys, "--target", tmp_path / "broken.json", "--output", tmp_path / "out")
    assert code == 1 and "is not valid JSON" in error_line(err)
    (tmp_path / "list.json").write_text("[]")
    code, _, err = run_cli(capsys, "--target", tmp_path / "list.json", "--output", tmp_path / "out")
    assert code == 1 and "expected a JSON object" in error_line(err)


def test_this_machine_gets_only_the_features_it_exposes(tmp_path):
    """A CPU model whose AMX tiles the VM withholds (cpuinfo without amx_*): the detected target turns them
    off, so the x86 preset's int8 artifact runs here; a full cpuinfo or none withholds nothing."""
    import tvm

    from mnet_compile.schedule.rules.amx import has_amx

    spr = tvm.target.Target({"kind": "llvm", "mcpu": "sapphirerapids"})
    flags = "fpu sse2 avx2 fma avx512f avx512bw avx512_vnni avx_vnni"
    (tmp_path / "vm").write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    (tmp_path / "metal").write_text(f"processor\t: 0\nflags\t\t: {flags} amx_tile amx_int8 amx_bf16\n")
    assert targets.withheld_features(spr, str(tmp_path / "vm")) == ["amx-tile", "amx-int8"]
    assert targets.withheld_features(spr, str(tmp_path / "metal")) == []
    assert targets.withheld_features(spr, str(tmp_path / "missing")) == []
    off = tvm.target.Target({"kind": "llvm", "mcpu": "sapphirerapids", "mattr": ["-amx-tile", "-amx-int8"]})
    assert has_amx(spr) and not has_amx(off)
    host = targets.load_preset("x86").tvm
    assert not targets.withheld_features(host)  # what LLVM may emit for this machine, it has
