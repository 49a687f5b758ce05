"""Model -> Relax: one entry point per source framework, weights bound as constants."""

from __future__ import annotations

import warnings

import tvm

from .errors import MnetError


def from_torch(model, input_shape: tuple[int, ...]) -> tvm.IRModule:
    """Trace a torch module with torch.export and import it into Relax (weights become constants)."""
    import torch
    from tvm.relax.frontend.torch import from_exported_program

    example = torch.zeros(input_shape, dtype=torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            program = torch.export.export(model.eval(), (example,))
        except Exception as exc:
            raise MnetError(f"torch.export failed: {str(exc).splitlines()[0]}") from None
        return from_exported_program(program)
