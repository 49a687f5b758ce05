"""torch -> Relax: a built-in torch module (traced with torch.export) or a torch.export archive (.pt2)."""

from __future__ import annotations

import re
import warnings
import zipfile

import tvm

from ..errors import MnetError
from .common import ModelInput, check_input_count, first_line, fix_shape, guess_layout, output_shape


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


def from_pt2(path, input_shape=None) -> tuple[tvm.IRModule, ModelInput]:
    """A torch.export archive (torch.export.save) -> Relax."""
    import torch
    from tvm.relax.frontend.torch import from_exported_program

    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            bad = archive.testzip()
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise MnetError(f"{path}: truncated or damaged torch.export archive ({first_line(exc)})") from None
    if bad is not None:
        raise MnetError(f"{path}: truncated or damaged torch.export archive (bad CRC in {bad})")
    if any(n.endswith("/data.pkl") for n in names):
        raise MnetError(f"{path}: not a model file: a torch.save file (a state_dict?), not a torch.export archive; "
                        "pass a state_dict of the built-in models with --weights")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            program = torch.export.load(path)
        except Exception as exc:
            raise MnetError(f"{path}: cannot read the torch.export archive: {first_line(exc)}") from None
        user = [s.arg.name for s in program.graph_signature.input_specs if s.kind.name == "USER_INPUT"]
        check_input_count(path, user)
        node = next(n for n in program.graph.nodes if n.op == "placeholder" and n.name == user[0])
        val = node.meta.get("val")
        file_shape = [int(d) if isinstance(d, int) else None for d in val.shape]
        dtype = str(val.dtype).replace("torch.", "")
        shape = fix_shape(path, user[0], file_shape, input_shape, "pt2")
        if any(d is None for d in file_shape):  # re-trace with the fixed shape: Relax then sees static shapes
            try:
                program = torch.export.export(program.module(), (torch.zeros(shape, dtype=val.dtype),))
            except Exception as exc:
                raise MnetError(f"{path}: cannot fix the input shape to {shape}: {first_line(exc)}") from None
        try:
            mod = from_exported_program(program)
        except AssertionError as exc:
            match = re.search(r"Unsupported function types \[(.*)\]", str(exc))
            if not match:
                raise MnetError(f"{path}: cannot import: {first_line(exc)}") from None
            ops = [o.strip(" '\"") for o in match.group(1).split(",")]
            nodes = [n.name for n in program.graph.nodes if n.op == "call_function"
                     and getattr(n.target, "__name__", "") in ops]
            where = f" (node '{nodes[0]}')" if nodes else ""
            raise MnetError(f"{path}: unsupported operator {ops[0]}{where}: the Relax torch frontend cannot import it") from None
        except MnetError:
            raise
        except Exception as exc:
            raise MnetError(f"{path}: cannot import: {first_line(exc)}") from None
    info = ModelInput(user[0], shape, dtype, guess_layout(shape, "pt2"), "pt2")
    info.output_shape = output_shape(mod, path)
    return mod, info
