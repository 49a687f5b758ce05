"""Target presets: targets/<name>.json, or a user's own preset file, validated and resolved once into a Preset.

A Preset knows its backend ("cpu" or "cuda"), its TVM target, its cross compiler and the device facts; the
rest of the package asks it rather than looking at target kinds. Reading presets imports neither TVM nor
torch (`mnet-compile targets` stays fast); the TVM target is made on first use.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from .errors import MnetError
from .resources import data_dir

BACKENDS = {"llvm": "cpu", "cuda": "cuda"}  # TVM target kind -> backend
# LLVM feature -> /proc/cpuinfo flag, for the features our schedules use: a CPU model names what its silicon
# has, but a VM or kernel may withhold some (AMX tiles under many hypervisors).
HOST_FEATURES = {
    "amx-tile": "amx_tile", "amx-int8": "amx_int8", "avx512f": "avx512f", "avx512bw": "avx512bw",
    "avx512vnni": "avx512_vnni", "avxvnni": "avx_vnni", "avx2": "avx2", "fma": "fma",
}
DESCRIPTION_LIMIT = 72  # one line of `mnet-compile targets`; longer notes belong in the README


@dataclass(frozen=True)
class Preset:
    """One target preset (the fields of targets/*.json; "target" there is `tvm_spec` here)."""

    name: str
    description: str
    tvm_spec: dict  # the TVM target as JSON
    arch: str  # platform.machine() of the device that can load the .so
    cc: str | None = None  # cross compiler; None = the host's compiler
    cc_install: str | None = None  # the command that installs `cc`
    runtime: str = ""  # how the device gets the TVM runtime ("{tvm}" stands for the pinned packages)
    qemu_cpu: str | None = None  # CPU model for qemu-user checks of the .so
    detect_host: bool = False  # fill mcpu and num-cores from this machine

    @property
    def backend(self) -> str:
        """"cpu" or "cuda": how kernels are scheduled, in which scope they are compiled, where they run."""
        return BACKENDS[self.tvm_spec["kind"]]

    @property
    def label(self) -> str:
        return f"{self.name} ({self.arch})"

    @property
    def runs_here(self) -> bool:
        """Whether this machine can run (and so time) the preset's code."""
        return self.backend == "cpu" and self.arch == platform.machine()

    @cached_property
    def tvm(self):
        """The tvm.target.Target this preset compiles for (made once)."""
        import tvm

        spec = dict(self.tvm_spec)
        if self.detect_host:
            import psutil

            spec.setdefault("mcpu", tvm.target.codegen.llvm_get_system_cpu())
            spec.setdefault("num-cores", psutil.cpu_count(logical=False) or os.cpu_count() or 1)
        try:
            target = tvm.target.Target(spec)
            if self.detect_host and "mattr" not in spec and (withheld := withheld_features(target)):
                target = tvm.target.Target({**spec, "mattr": [f"-{feature}" for feature in withheld]})
            return target
        except Exception as exc:
            raise MnetError(f"target preset {self.name}: TVM rejects its target: {' '.join(str(exc).split())[:200]}") from None

    def compiler(self, cc: str | None = None, sysroot: str | None = None):
        """The fcompile for export_library: the host compiler, or the (user's) cross compiler."""
        cc = cc or self.cc or ("g++" if sysroot else None)
        if cc is None:
            return None
        if sysroot and not os.path.isdir(sysroot):
            raise MnetError(f"sysroot {sysroot} is not a folder")
        if shutil.which(cc) is None:
            hint = f"; install it with: {self.cc_install}" if self.cc_install else ""
            raise MnetError(f"cross compiler {cc} for target {self.name} not found{hint}")
        from tvm.support import cc as tvm_cc

        options = [f"--sysroot={sysroot}"] if sysroot else []
        return tvm_cc.cross_compiler(cc, options=options)


# field: (accepted types, required)
_FIELDS = {
    "description": ((str,), True),
    "target": ((dict,), True),
    "arch": ((str,), True),
    "cc": ((str, type(None)), False),
    "cc_install": ((str, type(None)), False),
    "runtime": ((str,), False),
    "qemu_cpu": ((str, type(None)), False),
    "detect_host": ((bool,), False),
}


def preset_names() -> list[str]:
    return sorted(p[:-5] for p in os.listdir(data_dir("targets")) if p.endswith(".json"))


def _preset_file(name_or_path: str) -> Path:
    if name_or_path.endswith(".json") or os.sep in name_or_path:
        path = Path(name_or_path)
        if not path.is_file():
            raise MnetError(f"target preset file {name_or_path} not found")
        return path
    names = preset_names()
    if name_or_path not in names:
        raise MnetError(f"unknown target {name_or_path!r}; known targets: {', '.join(names)} (or a preset file: path/to/board.json)")
    return data_dir("targets") / f"{name_or_path}.json"


def check_spec(name: str, spec) -> None:
    """The checks every preset passes, shipped or the user's: known fields of the right types, one-line description."""
    if not isinstance(spec, dict):
        raise MnetError(f"target preset {name}: expected a JSON object")
    unknown = set(spec) - set(_FIELDS)
    if unknown:
        raise MnetError(f"target preset {name} has unknown fields: {', '.join(sorted(unknown))}")
    for field, (types, required) in _FIELDS.items():
        if field not in spec:
            if required:
                raise MnetError(f"target preset {name} lacks the field {field!r}")
        elif not isinstance(spec[field], types):
            raise MnetError(f"target preset {name}: {field!r} must be {' or '.join(t.__name__ for t in types)}")
    kind = spec["target"].get("kind")
    if kind not in BACKENDS:
        raise MnetError(f"target preset {name}: target kind must be one of {', '.join(BACKENDS)}, got {kind!r}")
    description = spec["description"]
    if not description.strip() or "\n" in description or len(description) > DESCRIPTION_LIMIT:
        raise MnetError(
            f"target preset {name}: the description must be one line of at most {DESCRIPTION_LIMIT} characters"
        )


def load_preset(name_or_path: str) -> Preset:
    """A shipped preset by name, or a preset file (any path ending in .json), validated."""
    path = _preset_file(str(name_or_path))
    name = path.stem
    try:
        spec = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise MnetError(f"cannot read target preset {path}: {exc}") from None
    except ValueError as exc:
        raise MnetError(f"target preset {path} is not valid JSON: {exc}") from None
    check_spec(name, spec)
    spec = dict(spec)
    return Preset(name=name, tvm_spec=spec.pop("target"), **spec)


def withheld_features(target, cpuinfo: str = "/proc/cpuinfo") -> list[str]:
    """The HOST_FEATURES that LLVM gives `target`'s CPU model but this machine's /proc/cpuinfo lacks (none
    where it cannot be read): an artifact built for "this machine" must run on it."""
    from tvm.target import codegen

    try:
        with open(cpuinfo) as f:
            flags = set(next((line for line in f if line.startswith("flags")), "").split(":", 1)[-1].split())
    except OSError:
        return []
    if not flags:
        return []
    return [feature for feature, flag in HOST_FEATURES.items()
            if flag not in flags and codegen.llvm_cpu_has_features(feature, target)]  # fmt: skip
