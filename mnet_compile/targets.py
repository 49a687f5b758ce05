"""Target presets: targets/<name>.json -> TVM target, cross compiler and device facts."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, fields

from .errors import MnetError
from .resources import data_dir


@dataclass(frozen=True)
class Preset:
    """One row of the preset table (see targets/*.json for the fields)."""

    name: str
    description: str
    target: dict
    arch: str  # platform.machine() of the device that can load the .so
    cc: str | None = None  # cross compiler; None = the host's compiler
    cc_install: str | None = None  # the command that installs `cc`
    runtime: str = ""  # how the device gets the TVM runtime
    qemu_cpu: str | None = None  # CPU model for qemu-user checks of the .so
    detect_host: bool = False  # fill mcpu and num-cores from this machine

    def tvm_target(self):
        """The tvm.target.Target this preset compiles for."""
        import tvm

        spec = dict(self.target)
        if self.detect_host:
            import psutil

            spec.setdefault("mcpu", tvm.target.codegen.llvm_get_system_cpu())
            spec.setdefault("num-cores", psutil.cpu_count(logical=False) or os.cpu_count() or 1)
        return tvm.target.Target(spec)

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


def preset_names() -> list[str]:
    return sorted(p[:-5] for p in os.listdir(data_dir("targets")) if p.endswith(".json"))


def load_preset(name: str) -> Preset:
    names = preset_names()
    if name not in names:
        raise MnetError(f"unknown target {name!r}; known targets: {', '.join(names)}")
    with open(data_dir("targets") / f"{name}.json") as f:
        spec = json.load(f)
    unknown = set(spec) - {f.name for f in fields(Preset)}
    if unknown:
        raise MnetError(f"target preset {name} has unknown fields: {', '.join(sorted(unknown))}")
    return Preset(name=name, **spec)
