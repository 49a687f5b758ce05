"""Where the project's data and cache folders are, and which TVM release it runs on.

The TVM pin lives in pyproject.toml only; everything that must name it (bundle README, runtime kits,
preset notes) asks `tvm_versions()`, i.e. the installed packages, which pip made equal to the pin.
"""

from __future__ import annotations

import os
from importlib import metadata
from pathlib import Path

from .errors import MnetError

_PACKAGE = Path(__file__).resolve().parent
TVM_DISTRIBUTIONS = ("apache-tvm", "apache-tvm-ffi")


def data_dir(name: str) -> Path:
    """`targets`, `schedules`, `device` or `tables`: mnet_compile/data/<name> once installed, else the checkout's top-level folder."""
    installed = _PACKAGE / "data" / name
    return installed if installed.is_dir() else _PACKAGE.parent / name


def cache_root() -> Path:
    """~/.cache/mnet-compile (or $MNET_CACHE, or $XDG_CACHE_HOME/mnet-compile)."""
    if os.environ.get("MNET_CACHE"):
        return Path(os.environ["MNET_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mnet-compile"


def tvm_versions() -> dict[str, str]:
    """{"apache-tvm": ..., "apache-tvm-ffi": ...} of this environment (the compiler's)."""
    try:
        return {name: metadata.version(name) for name in TVM_DISTRIBUTIONS}
    except metadata.PackageNotFoundError as exc:
        raise MnetError(f"{exc.name} is not installed; install mnet-compile's dependencies first") from None


def tvm_requirements() -> str:
    """"apache-tvm==X apache-tvm-ffi==Y": what a device must pip install to load this machine's artifacts."""
    return " ".join(f"{name}=={version}" for name, version in tvm_versions().items())
