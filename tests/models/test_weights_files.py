"""--weights files that are empty or hold more than tensors (a pickle that would run code): one line, nothing runs."""

from __future__ import annotations

import os

import torch

from ..helpers import error_line, run_cli

SMALL = ["--alpha", "0.25", "--resolution", "32"]


def test_empty_and_malicious_weights_files(capsys, tmp_path):
    """An empty file gave `internal error: IndexError`; a pickle that runs code got torch's advice to retry
    with weights_only=False. Both are now one line that says what is wrong, and nothing runs."""
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "evil.pt"
    torch.save({"features.0.weight": Evil()}, evil)
    for path, message in [(empty, "empty or truncated file"), (evil, "holds Python objects besides tensors (posix.system)")]:
        out = tmp_path / "out"
        code, _, err = run_cli(capsys, *SMALL, "--weights", path, "--output", out)
        assert code == 1 and message in err and error_line(err), err
        assert "weights_only=False" not in err and "weights_only` set to `False" not in err
        assert not out.exists() and not marker.exists()
