"""Test-only device tools: instruction counts (objdump) and an emulated AArch64 CPython (debootstrap + qemu-user).

They prove what the artifacts contain and that the device side runs; the product never needs them.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from mnet_compile.device.devicekit import QEMU, QEMU_INSTALL, WHEEL_PLATFORM, require_tool
from mnet_compile.errors import MnetError
from mnet_compile.resources import cache_root, tvm_requirements

OBJDUMP = {"aarch64": "aarch64-linux-gnu-objdump", "armv7l": "arm-linux-gnueabihf-objdump", "x86_64": "objdump"}


def count_instructions(lib: str | os.PathLike, pattern: str, arch: str) -> int:
    """How many disassembled instructions of `lib` match the regex `pattern` (e.g. r"fmla\\s+v\\d+\\.4s")."""
    tool = OBJDUMP.get(arch, "objdump")
    require_tool(tool, {"aarch64": "apt-get install binutils-aarch64-linux-gnu",
                         "armv7l": "apt-get install binutils-arm-linux-gnueabihf"}.get(arch, "apt-get install binutils"))  # fmt: skip
    proc = subprocess.run([tool, "-d", "--no-show-raw-insn", str(lib)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise MnetError(f"{tool} cannot read {lib}: {proc.stderr.strip()}")
    regex = re.compile(pattern)
    return sum(1 for line in proc.stdout.splitlines() if regex.search(line))


DEBIAN_ARCH = {"aarch64": "arm64", "armv7l": "armhf"}


def emulated_python(arch: str = "aarch64", root: str | os.PathLike | None = None, suite: str = "bookworm") -> Path:
    """A Debian CPython for `arch` to run under qemu-user: debootstrap's first stage, debs unpacked here.

    `debootstrap --foreign --variant=minbase --include=python3` only downloads and unpacks part of the
    system; every .deb is then unpacked with dpkg-deb -x on this machine (the emulated second stage
    would take 7+ minutes). Returns the root folder; its interpreter is <root>/usr/bin/python3.
    Needs debootstrap (apt-get install debootstrap) and Debian's package servers (once; cached).
    """
    root = Path(root) if root else cache_root() / arch / f"debian-{suite}-python"
    if (root / ".mnet-complete").is_file():
        return root
    require_tool("debootstrap", "apt-get install debootstrap")
    require_tool("dpkg-deb", "apt-get install dpkg")
    shutil.rmtree(root, ignore_errors=True)
    root.parent.mkdir(parents=True, exist_ok=True)
    cmd = ["debootstrap", f"--arch={DEBIAN_ARCH[arch]}", "--variant=minbase", "--foreign", "--include=python3", suite, str(root)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise MnetError(f"{' '.join(cmd)} failed: {(proc.stderr or proc.stdout).strip()[-1000:]}")
    for deb in sorted((root / "var" / "cache" / "apt" / "archives").glob("*.deb")):
        proc = subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise MnetError(f"dpkg-deb -x {deb.name} failed: {proc.stderr.strip()}")
    if not list((root / "usr" / "bin").glob("python3*")):
        raise MnetError(f"no python3 in {root} after unpacking")
    (root / ".mnet-complete").write_text(suite + "\n")
    return root


def install_wheels(root: str | os.PathLike, arch: str = "aarch64", packages: list[str] | None = None, python_version: str | None = None) -> Path:
    """pip install (from this machine) `arch` wheels into <root>/opt/site: the TVM runtime and numpy by default."""
    site = Path(root) / "opt" / "site"
    if (site / ".mnet-complete").is_file() and packages is None:
        return site
    packages = packages or [*tvm_requirements().split(), "numpy"]
    pyver = python_version or _emulated_python_version(root)
    cmd = [
        sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--target", str(site),
        "--platform", WHEEL_PLATFORM[arch], "--only-binary=:all:", "--python-version", pyver,
        "--implementation", "cp", "--upgrade", *packages,
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise MnetError(f"pip install --target {site} failed: {proc.stderr.strip()[-1000:]}")
    (site / ".mnet-complete").write_text(" ".join(packages) + "\n")
    return site


def _emulated_python_version(root) -> str:
    names = sorted(p.name for p in (Path(root) / "usr" / "bin").glob("python3.*") if re.fullmatch(r"python3\.\d+", p.name))
    if not names:
        raise MnetError(f"no python3.X interpreter in {root}/usr/bin")
    return names[-1][len("python"):]


def run_emulated_python(root, args: list[str], arch: str = "aarch64", cpu: str | None = None, env: dict | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run <root>/usr/bin/python3 under qemu-user (-L root), with <root>/opt/site on PYTHONPATH."""
    root = Path(root)
    qemu = require_tool(QEMU[arch], QEMU_INSTALL)
    python = root / "usr" / "bin" / f"python{_emulated_python_version(root)}"
    full_env = {"PATH": "/usr/bin:/bin", "HOME": str(root / "tmp"), "PYTHONPATH": str(root / "opt" / "site"), "PYTHONDONTWRITEBYTECODE": "1"}
    full_env.update(env or {})
    cmd = [qemu] + (["-cpu", cpu] if cpu else []) + ["-L", str(root), str(python), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=timeout)
