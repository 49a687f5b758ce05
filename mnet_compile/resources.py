"""Where the project's data folders are: beside the package in a checkout, inside it once installed."""

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    """`targets`, `schedules`, ...: the installed copy if there is one, else the checkout's top-level folder."""
    installed = _PACKAGE / name
    return installed if installed.is_dir() else _PACKAGE.parent / name
