"""Fuzzing the artifact loader (tests/frontends/test_fuzz.py fuzzes the model-file importers).

Seeded, a few seconds: random mutations of an artifact's manifest (values, types, keys, raw
bytes) and of its folder (files removed, cut, flipped, replaced by links or folders), signed or not. Each
case must load and then behave exactly as the original, or raise runtime.ArtifactError: never anything else.
"""

from __future__ import annotations

import copy
import json
import os
import random
import shutil
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from mnet_compile.device import runtime

SEED = 20261128
CASES = 400

STRINGS = ["", "model.so", "../model.so", "/etc/passwd", "model.so/", "..", ".", "sub/model.so", "cuda", "llvm",
           "NHWC", "NCHW", "probabilities", "logits", "float16", "float32", "int8", "object", "aarch64", "x86_64",
           "RGB", "BGR", "é\u2028", "\x00", "a" * 5000, "0" * 64, "f" * 64]
NUMBERS = [0, 1, -1, 3, 7, 128, 1000, 2**31, 2**63, 10**40, -(10**40), 0.5, -0.0, 1e308, 1.5, 224.0]


def random_value(rng: random.Random, depth: int = 0):
    kind = rng.randrange(8)
    if kind == 0:
        return rng.choice(STRINGS)
    if kind == 1:
        return rng.choice(NUMBERS)
    if kind == 2:
        return rng.choice([None, True, False])
    if kind == 3 and depth < 3:
        return [random_value(rng, depth + 1) for _ in range(rng.randrange(5))]
    if kind == 4 and depth < 3:
        return {rng.choice(STRINGS[:12]): random_value(rng, depth + 1) for _ in range(rng.randrange(4))}
    if kind == 5:
        return [1, 3, rng.choice([0, 32, 64, 127, 128, 129, 4096]), 128]
    if kind == 6:
        return {"sha256": rng.choice(["0" * 64, "F" * 64, "zz", 5]), "bytes": rng.choice([0, -1, 1.5, "1"])}
    return rng.choice(NUMBERS + STRINGS)


def paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from paths(value, prefix + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from paths(value, prefix + (i,))


def mutate_manifest(manifest: dict, rng: random.Random) -> dict:
    m = copy.deepcopy(manifest)
    for _ in range(rng.randint(1, 3)):
        where = rng.choice([p for p in paths(m) if p])
        parent = m
        for key in where[:-1]:
            parent = parent[key]
        last = where[-1]
        op = rng.randrange(6)
        if op == 0:
            del parent[last]
        elif op == 1:
            parent[last] = random_value(rng)
        elif op == 2 and isinstance(parent[last], (int, float)) and not isinstance(parent[last], bool):
            parent[last] = rng.choice([parent[last] + 1, parent[last] - 1, -parent[last], parent[last] * 2, float(parent[last])])
        elif op == 3:
            parent[last] = rng.choice([[parent[last]], {"x": parent[last]}, str(parent[last])])
        elif op == 4 and isinstance(parent, dict):
            parent[rng.choice(STRINGS)] = random_value(rng)
        else:  # the edits a user or attacker would make
            target = rng.choice([("input", "shape"), ("input", "dtype"), ("output", "kind"), ("output", "shape"),
                                 ("target", "arch"), ("target", "tvm", "kind"), ("files",), ("preprocessing", "mean")])
            node = m
            for key in target[:-1]:
                node = node.setdefault(key, {}) if isinstance(node, dict) else {}
            if isinstance(node, dict):
                node[target[-1]] = random_value(rng)
    return m


def mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    op = rng.randrange(5)
    if op == 0 and data:
        i = rng.randrange(len(data))
        return data[:i] + bytes([data[i] ^ (1 << rng.randrange(8))]) + data[i + 1 :]
    if op == 1:
        return data[: rng.randrange(len(data) + 1)]
    if op == 2:
        i = rng.randrange(len(data) + 1)
        return data[:i] + rng.choice([b"{", b"]", b",", b'"', b"\\", b"\xff", b"NaN", b"\x00"]) + data[i:]
    if op == 3:
        n = rng.choice([10, 1000, 100000])
        return b"[" * n + b"]" * n
    key = b'"format_version": 1,'
    return data.replace(key, key + b" " + key, 1)  # a duplicate key


def mutate_folder(folder: Path, outside: Path, rng: random.Random) -> str:
    lib = folder / "model.so"
    op = rng.randrange(9)
    if op == 0:
        lib.unlink()
    elif op == 1:
        data = lib.read_bytes()
        lib.unlink()
        lib.write_bytes(data[: rng.randrange(len(data))])
    elif op == 2:
        data = bytearray(lib.read_bytes())
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        lib.unlink()
        lib.write_bytes(bytes(data))
    elif op == 3:
        lib.unlink()
        lib.symlink_to(outside / "model.so")  # the right bytes, outside the folder
    elif op == 4:
        os.rename(lib, folder / "real.so")
        lib.symlink_to("real.so")  # inside: allowed
    elif op == 5:
        lib.unlink()
        lib.mkdir()
    elif op == 6:
        (folder / "manifest.json").unlink()
        (folder / "manifest.json").symlink_to(outside / "manifest.json")
    elif op == 7:
        (folder / "manifest.sig").write_bytes(rng.choice([b"", b"00" * 64, b"zz", os.urandom(200)]))
    else:
        (folder / rng.choice(["extra.bin", ".hidden", "notes.txt"])).write_bytes(os.urandom(10))
    return f"folder-{op}"


@pytest.fixture(scope="module")
def original(compiled, tmp_path_factory):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from mnet_compile.device.signing import sign_folder

    root = tmp_path_factory.mktemp("fuzz")
    unsigned = root / "unsigned"
    shutil.copytree(compiled(0.25, 128, seed=7), unsigned)
    key = Ed25519PrivateKey.generate()
    signed = root / "signed"
    shutil.copytree(unsigned, signed)
    sign_folder(signed, key)
    model = runtime.load(str(unsigned))
    x = np.random.default_rng(1).standard_normal(model.input_shape).astype("float32")
    return {"unsigned": unsigned, "signed": signed, "public": key.public_key().public_bytes_raw(), "x": x,
            "y": model(x), "top": model.classify(x), "manifest": json.loads((unsigned / "manifest.json").read_text())}


def test_fuzz_artifact_loader(original, tmp_path):
    rng = random.Random(SEED)
    outcomes, kinds = Counter(), Counter()
    image = np.random.default_rng(2).integers(0, 256, (40, 57, 3), dtype=np.uint8)
    start = time.perf_counter()
    for case in range(CASES):
        signed = rng.random() < 0.25
        source = original["signed" if signed else "unsigned"]
        folder = tmp_path / f"c{case}"
        folder.mkdir()
        for item in source.iterdir():
            if item.name == "model.so":
                os.link(item, folder / item.name)  # the same bytes, no copy; replaced before any change
            else:
                shutil.copy(item, folder / item.name)
        roll = rng.random()
        if roll < 0.5:
            kind = "manifest-values"
            data = json.dumps(mutate_manifest(original["manifest"], rng), indent=rng.choice([None, 2])).encode()
            (folder / "manifest.json").write_bytes(data)
        elif roll < 0.75:
            kind = "manifest-bytes"
            (folder / "manifest.json").write_bytes(mutate_bytes((folder / "manifest.json").read_bytes(), rng))
        else:
            kind = mutate_folder(folder, source, rng)
        kinds[kind.split("-")[0]] += 1
        try:
            model = runtime.load(str(folder), public_key=original["public"] if signed else None)
        except runtime.ArtifactError as exc:
            assert "\n" not in str(exc), (case, kind, str(exc))
            outcomes["ArtifactError"] += 1
        else:  # loaded: it must be the original model, whatever the manifest now says about the rest
            np.testing.assert_array_equal(model(original["x"]), original["y"], err_msg=f"case {case} {kind}")
            assert model.classify(original["x"]) == original["top"], (case, kind)
            if signed:
                assert (folder / "manifest.json").read_bytes() == (source / "manifest.json").read_bytes(), (case, kind)
            try:
                assert runtime.preprocess(image, model.manifest).shape == model.input_shape
            except runtime.ArtifactError:
                pass
            outcomes["loaded"] += 1
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    seconds = time.perf_counter() - start
    print(f"\nartifact fuzz: {CASES} cases ({dict(kinds)}) in {seconds:.1f} s: "
          f"{outcomes['ArtifactError']} ArtifactError, {outcomes['loaded']} loaded")
    assert outcomes["ArtifactError"] + outcomes["loaded"] == CASES
    assert outcomes["loaded"] >= 10 and outcomes["ArtifactError"] >= CASES // 2  # both paths were exercised
