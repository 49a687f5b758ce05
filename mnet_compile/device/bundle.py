"""The device bundle: one .tar.gz with the artifact, the Python loader, the C++ runner's source and a README."""

from __future__ import annotations

import io
import os
import tarfile
import tempfile
from pathlib import Path

from ..errors import MnetError
from ..resources import data_dir, tvm_requirements
from . import runtime

APP_FILES = ("main.cc", "trust.h", "Makefile", "CMakeLists.txt")


def write_bundle(artifact: Path, preset, name: str | None = None, dest_dir: Path | None = None, shown=None) -> Path:
    """Write `<name>.tar.gz` (name: the artifact folder's) into dest_dir (default: beside the artifact folder),
    atomically, and return its path. Its top folder is `<name>/`. An OSError (a full disk) is one line, naming
    the bundle as `shown` (where it will end up) if given."""
    artifact = Path(artifact)
    manifest = runtime.read_manifest(str(artifact))  # never bundle a folder whose files do not match
    top = name or artifact.name
    readme = (data_dir("device") / "README.bundle.md").read_text()
    tvm = tvm_requirements()
    values = {"name": top, "preset": preset.name, "arch": preset.arch, "runtime": preset.runtime.replace("{tvm}", tvm), "tvm": tvm}
    for key, value in values.items():
        readme = readme.replace("{" + key + "}", value)
    dest = Path(dest_dir or artifact.parent) / f"{top}.tar.gz"
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
        os.close(fd)
        with tarfile.open(tmp, "w:gz") as tar:
            for member in manifest["files"]:
                tar.add(artifact / member, f"{top}/{member}")
            tar.add(artifact / runtime.MANIFEST, f"{top}/{runtime.MANIFEST}")
            if (artifact / runtime.SIGNATURE).is_file():
                tar.add(artifact / runtime.SIGNATURE, f"{top}/{runtime.SIGNATURE}")
            tar.add(runtime.__file__, f"{top}/runtime.py")
            for member in APP_FILES:
                tar.add(data_dir("device") / "app" / member, f"{top}/app/{member}")
            data = readme.encode()
            info = tarfile.TarInfo(f"{top}/README.md")
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except OSError as exc:
        raise MnetError(f"cannot write the device bundle {shown or dest}: {exc.strerror or exc}") from None
    finally:
        if tmp and os.path.exists(tmp):
            os.unlink(tmp)
    return dest
