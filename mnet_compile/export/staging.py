"""Temporary folders beside an output, renamed into place when complete; leftovers of killed builds removed.

A build writes into `.<name>.tmp-XXXXXXXX/` beside the output folder and holds an exclusive lock (flock)
on the `.lock` file inside it while it works, so another build knows that folder is alive. The lock goes
away with the process, however it dies: the next build of the same output removes every such folder whose
lock it can take, restores an output left renamed aside by a build killed mid-swap, and removes older
leftovers (the unlocked temporary names of earlier versions) after STALE_SECONDS.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

LOCK = ".lock"
STALE_SECONDS = 600  # leftovers that carry no lock: removed when this old


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def _locked_by_someone(folder: Path) -> bool | None:
    """True: a live build holds the folder's lock; False: the lock is free; None: the folder has no lock file."""
    try:
        fd = os.open(folder / LOCK, os.O_RDWR)
    except FileNotFoundError:
        return None
    except OSError:
        return True  # cannot tell: leave it alone
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # closing releases the lock we may have taken
    return False


def clean_stale(out: Path, log=None) -> list[Path]:
    """Remove what killed builds of `out` left beside it; return what was removed or restored."""
    out = Path(out)
    parent, prefix = out.parent, f".{out.name}."
    removed = []
    try:
        entries = [p for p in parent.iterdir() if p.name.startswith(prefix)]
    except OSError:
        return removed
    now = time.time()
    for entry in sorted(entries):
        rest = entry.name[len(prefix):]
        try:
            if entry.is_symlink():
                continue
            age = now - entry.lstat().st_mtime
            old = re.fullmatch(r"old-(\d+)", rest)
            if old and entry.is_dir():
                if _pid_alive(int(old.group(1))):
                    continue
                if not out.exists():  # killed between moving the old artifact aside and moving the new one in
                    entry.rename(out)
                    removed.append(out)
                    if log:
                        log(f"restored {out} from {entry.name}, left by a killed build")
                    continue
            elif rest.startswith("tmp-") and entry.is_dir():
                state = _locked_by_someone(entry)
                if state is True or (state is None and age < STALE_SECONDS):
                    continue
            elif re.fullmatch(r"[a-z0-9_]{8}", rest) or re.fullmatch(r"tar\.gz\.[a-z0-9_]{8}", rest):
                if age < STALE_SECONDS:  # an earlier version's temporary folder or bundle file: no lock
                    continue
            else:
                continue
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed.append(entry)
            if log:
                log(f"removed {entry.name}, left by a killed build")
        except OSError:
            continue
    return removed


@contextmanager
def staging_folder(out: Path, log=None):
    """A locked, empty temporary folder beside `out`; removed on exit unless it was renamed away (commit)."""
    out = Path(out)
    clean_stale(out, log)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    fd = os.open(tmp / LOCK, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield tmp
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        os.close(fd)


def commit(tmp: Path, out: Path, force: bool, beside: tuple[str, ...] = ()) -> None:
    """Rename the finished `tmp` into place as `out` (an existing `out` only with force), then move the files
    named in `beside` (e.g. the bundle) from it to out's parent. On failure the old `out` is back in place."""
    from ..errors import MnetError

    old = None
    if out.exists():
        if not force:
            raise MnetError(f"output folder {out} already exists; pass --force to replace it")
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        if old.exists():
            shutil.rmtree(old)
        out.rename(old)
    try:
        tmp.rename(out)
        try:
            for name in beside:
                os.replace(out / name, out.parent / name)
        except OSError:
            out.rename(tmp)  # removed with the staging folder
            raise
    except OSError:
        if old is not None:
            old.rename(out)
        raise
    try:
        (out / LOCK).unlink()
    except FileNotFoundError:
        pass
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
