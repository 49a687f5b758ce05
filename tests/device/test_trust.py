"""Artifacts a device can trust (issue 11): strict layout and manifest schema, the compiled module checked
against its manifest at load, Ed25519 signatures (Python loader and C++ runner), NaN inputs refused."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mnet_compile.cli import main
from mnet_compile.device import devicekit, runtime

from ..helpers import run_cli

ROOT = Path(__file__).resolve().parents[2]
TRUST_H = ROOT / "device" / "app" / "trust.h"


def one_line_error(err: str) -> bool:
    return len(err.strip().splitlines()) == 1 and err.startswith(("error: ", "interrupted: "))


@pytest.fixture
def art(compiled, tmp_path):
    dst = tmp_path / "art"
    shutil.copytree(compiled(0.25, 128, seed=7), dst)
    return dst


def edit_manifest(folder: Path, change) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    change(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))


# ----------------------------------------------------------------------------------- layout and schema


def test_files_outside_the_folder_are_never_read(art, tmp_path):
    """Case 1: a manifest naming ../../etc/passwd (with its right sha256) or an absolute path is refused by
    name, before any file is opened: no yes/no oracle on other files' contents."""
    secret = tmp_path / "secret.txt"
    secret.write_text("the content\n")
    digest = hashlib.sha256(secret.read_bytes()).hexdigest()
    for name in ["../secret.txt", "../../../../" + str(secret).lstrip("/"), str(secret), "sub/model.so", ".hidden", ".."]:
        edit_manifest(art, lambda m: m["files"].update({name: {"sha256": digest, "bytes": 12}}))
        with pytest.raises(runtime.ArtifactError, match="must be a plain name inside the folder"):
            runtime.load(str(art))
        edit_manifest(art, lambda m: m["files"].pop(name))
    runtime.load(str(art))  # the untouched manifest still loads


def test_symlinks_leaving_the_folder_are_refused(art, tmp_path):
    outside = tmp_path / "outside.so"
    shutil.move(art / "model.so", outside)
    (art / "model.so").symlink_to(outside)
    with pytest.raises(runtime.ArtifactError, match="link that leaves the artifact folder"):
        runtime.load(str(art))
    (art / "model.so").unlink()
    shutil.move(outside, art / "model-v1.so")
    (art / "model.so").symlink_to("model-v1.so")  # a link inside the folder is fine
    runtime.load(str(art))
    manifest = art / "manifest.json"
    shutil.move(manifest, tmp_path / "m.json")
    manifest.symlink_to(tmp_path / "m.json")
    with pytest.raises(runtime.ArtifactError, match="link that leaves"):
        runtime.load(str(art))


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda m: m.update(files=[["model.so", "x"]]), "files must be an object"),
        (lambda m: m["files"].update({"model.so": "0" * 64}), "files.model.so must be an object"),
        (lambda m: m["files"]["model.so"].update(sha256=1), "files.model.so.sha256 must be 64 lowercase hex"),
        (lambda m: m["files"]["model.so"].update(bytes=-1), "files.model.so.bytes must be a non-negative integer"),
        (lambda m: m.pop("target"), "target is missing"),
        (lambda m: m.pop("input"), "input is missing"),
        (lambda m: m["input"].pop("shape"), "input.shape must be a list"),
        (lambda m: m["input"].update(shape=[1, 3, 128.0, 128]), "input.shape must be a list of 1 to 8 positive integers"),
        (lambda m: m["input"].update(shape=[1, 3, True, 128]), "input.shape must be a list of 1 to 8 positive integers"),
        (lambda m: m["input"].update(shape=[1, 3, 1 << 40, 1]), "input.shape must be a list"),
        (lambda m: m["input"].update(dtype="object"), "input.dtype must be one of"),
        (lambda m: m["output"].update(kind="labels"), "output.kind must be one of"),
        (lambda m: m["target"].update(tvm="llvm"), "target.tvm must be an object"),
        (lambda m: m["preprocessing"].update(std=[0, 1, 1]), "preprocessing.std must not be zero"),
        (lambda m: m["preprocessing"].update(center_crop=[100000, 5]), "preprocessing.center_crop must be the input's"),
        (lambda m: m.update(format_version=True), "unsupported format"),
        (lambda m: m.update(model=["x"]), "model must be a string"),
        (lambda m: m["schedules"].update(family=7), "schedules.family has the wrong type"),
        (lambda m: m["schedules"].update(tuned=-1), "schedules.tuned has the wrong type"),
        (lambda m: m["schedules"].update(per_kernel=[]), "schedules.per_kernel must be an object"),
        (lambda m: next(iter(m["schedules"]["per_kernel"].values())).update(schedule="fast"), "schedule must be one of record, transferred, default"),
    ],
)
def test_malformed_manifest_is_one_artifact_error(art, change, message):
    """Case 2: a manifest of the wrong shape raises ArtifactError naming the field, not KeyError & co."""
    edit_manifest(art, change)
    with pytest.raises(runtime.ArtifactError, match=message.replace("(", r"\(").replace(".", r"\.")) as info:
        runtime.load(str(art))
    assert "\n" not in str(info.value)


def test_main_export_passes_the_schema(art):
    """What the export writes (issue 9's schedules: family, records, tuned, kernels, per_kernel) loads."""
    manifest = runtime.read_manifest(str(art))
    schedules = manifest["schedules"]
    assert {"family", "records", "tuned", "kernels", "per_kernel"} <= set(schedules)
    assert schedules["per_kernel"] and all(v["schedule"] in ("record", "default") for v in schedules["per_kernel"].values())


@pytest.mark.parametrize(
    "text,message",
    [
        ("[" * 100000 + "]" * 100000, "nested too deeply"),
        ('{"format_version": 1, "format_version": 1}', "duplicate key"),
        ('{"format_version": NaN}', "NaN is not JSON"),
        ("\xff\xfe", "cannot read"),
        ("", "cannot read"),
        ("[1, 2]", "not a JSON object"),
    ],
)
def test_unparsable_manifest_is_one_artifact_error(art, text, message):
    (art / "manifest.json").write_bytes(text.encode("latin-1"))
    with pytest.raises(runtime.ArtifactError, match=message) as info:
        runtime.load(str(art))
    assert "\n" not in str(info.value)


def test_oversized_manifest_is_refused(art):
    manifest = json.loads((art / "manifest.json").read_text())
    manifest["padding"] = "x" * (runtime.MAX_MANIFEST_BYTES + 1)
    (art / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(runtime.ArtifactError, match="too large"):
        runtime.load(str(art))


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda m: (m["input"].update(shape=[1, 3, 64, 64]), m["preprocessing"].update(center_crop=[64, 64])),
         "does not accept the manifest's input"),
        (lambda m: m["input"].update(dtype="float16"), "does not accept the manifest's input"),
        (lambda m: m["output"].update(shape=[1, 10]), "returns (1, 1000) float32, the manifest says (1, 10)"),
        (lambda m: m["output"].update(dtype="float64"), "the manifest says (1, 1000) float64"),
        (lambda m: m["output"].update(kind="probabilities"), "says the output is probabilities"),
        (lambda m: m["target"]["tvm"].update(kind="cuda"), "holds no CUDA code"),
    ],
)
def test_edited_manifest_is_refused_at_load(art, change, message):
    """Case 2: an edited shape, dtype or output kind (logits -> probabilities turned p=0.002 into 0.78) is
    refused at load, by the compiled module's own signature, not at the first call or never."""
    edit_manifest(art, change)
    with pytest.raises(runtime.ArtifactError, match=message.replace("(", r"\(").replace(")", r"\)")):
        runtime.load(str(art))


def test_edited_manifest_through_the_cli_is_one_line(capsys, art):
    edit_manifest(art, lambda m: (m["input"].update(shape=[1, 3, 96, 96]), m["preprocessing"].update(center_crop=[96, 96])))
    code, _, err = run_cli(capsys, "run", art, "--repeat", "1")
    assert code == 1 and one_line_error(err) and "does not accept the manifest's input" in err, err
    assert "match_cast" not in err and "internal error" not in err


# ---------------------------------------------------------------------------------------- inputs


def test_nan_and_inf_inputs_are_refused(art, capsys):
    """Case 5: one NaN pixel gave finite, plausible logits (the compiled ReLU is max(x, 0)); now refused."""
    model = runtime.load(str(art))
    assert model._stage is not None  # counted by the artifact's input stage, then by numpy (loader fallback)
    x = np.random.default_rng(0).standard_normal(model.input_shape).astype("float32")
    finite = model(x)
    for stage in (model._stage, None):
        model._stage = stage
        for bad in (np.nan, np.inf, -np.inf):
            y = x.copy()
            y[0, 1, 5, 7] = bad
            with pytest.raises(runtime.ArtifactError, match="holds 1 NaN or infinite value; refusing"):
                model(y)
            with pytest.raises(runtime.ArtifactError, match="NaN"):
                model.classify(y)
        with pytest.raises(runtime.ArtifactError, match="holds 49152 NaN"):
            model(np.full(model.input_shape, np.nan, "float32"))
        np.testing.assert_array_equal(model(x), finite)
    np.save(art.parent / "nan.npy", np.full(model.input_shape, np.nan, "float32"))
    code, _, err = run_cli(capsys, "run", art, "--input", art.parent / "nan.npy")
    assert code == 1 and one_line_error(err) and "NaN" in err


def test_benchmark_arguments(art):
    """Case 4: benchmark(repeat=0) raised IndexError."""
    model = runtime.load(str(art))
    for kwargs in ({"repeat": 0}, {"repeat": -3}, {"warmup": -1}, {"repeat": 2.5}):
        with pytest.raises(runtime.ArtifactError, match="repeat >= 1 and warmup >= 0"):
            model.benchmark(**kwargs)
    assert model.benchmark(repeat=1, warmup=0)["runs"] == 1


# ----------------------------------------------------------------------------------------- signing


def test_pure_python_ed25519_matches_cryptography():
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    # RFC 8032 section 7.1, test 1
    pk = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
    sig = bytes.fromhex(
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
    )
    assert runtime.ed25519_verify(pk, b"", sig)
    assert not runtime.ed25519_verify(pk, b"x", sig)
    rng = random.Random(11)
    for _ in range(12):
        key = Ed25519PrivateKey.generate()
        public = key.public_key().public_bytes_raw()
        message = rng.randbytes(rng.choice([0, 1, 63, 64, 200, 3000]))
        signature = key.sign(message)
        assert runtime.ed25519_verify(public, message, signature)
        bad = bytearray(signature)
        bad[rng.randrange(64)] ^= 1 << rng.randrange(8)
        assert not runtime.ed25519_verify(public, message, bytes(bad))
        if message:
            assert not runtime.ed25519_verify(public, message[:-1], signature)
    # S >= L (a malleable twin of a valid signature) is refused, as RFC 8032 requires
    s = int.from_bytes(signature[32:], "little") + runtime._L
    assert s < 2**256 and not runtime.ed25519_verify(public, message, signature[:32] + s.to_bytes(32, "little"))


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    folder = tmp_path_factory.mktemp("keys")
    assert main(["keygen", str(folder / "builder")]) == 0
    assert main(["keygen", str(folder / "other")]) == 0
    return folder


def test_keygen(keys, capsys):
    private = keys / "builder"
    assert private.stat().st_mode & 0o777 == 0o600
    assert (keys / "builder.pub").read_text().startswith("-----BEGIN PUBLIC KEY-----")
    code, _, err = run_cli(capsys, "keygen", private)
    assert code == 1 and "already exists; pass --force" in err and one_line_error(err)


def test_signed_artifact_loads_with_its_key_only(compiled, keys, tmp_path, capsys):
    """Case 3: origin. A signed artifact loads with the right public key, is refused with another key,
    and once signed, any change to the manifest (which lists every file's sha256) is refused."""
    art = tmp_path / "signed"
    out = compiled(0.25, 64, seed=3, sign=str(keys / "builder"))
    shutil.copytree(out, art)
    assert sorted(p.name for p in art.iterdir()) == ["manifest.json", "manifest.sig", "model.so"]
    good, other = keys / "builder.pub", keys / "other.pub"
    model = runtime.load(str(art), public_key=str(good))
    assert model(np.zeros(model.input_shape, "float32")).shape == (1, 1000)
    runtime.load(str(art), public_key=(good).read_text())  # the key's text, raw bytes, or hex work as well
    with pytest.raises(runtime.ArtifactError, match="signature check failed"):
        runtime.load(str(art), public_key=str(other))
    code, _, err = run_cli(capsys, "run", art, "--public-key", other, "--repeat", "1")
    assert code == 1 and one_line_error(err) and "signature check failed" in err
    code, out_text, _ = run_cli(capsys, "run", art, "--public-key", good, "--repeat", "1")
    assert code == 0 and "latency" in out_text
    runtime.load(str(art))  # without a key the signature is not required and not checked
    with open(art / "manifest.json", "a") as f:
        f.write(" ")  # the same manifest for a JSON reader, other bytes for the signature
    with pytest.raises(runtime.ArtifactError, match="signature check failed"):
        runtime.load(str(art), public_key=str(good))
    (art / "manifest.sig").unlink()
    with pytest.raises(runtime.ArtifactError, match="is not signed"):
        runtime.load(str(art), public_key=str(good))
    with pytest.raises(runtime.ArtifactError, match="not an Ed25519 public key"):
        runtime.load(str(art), public_key=str(keys / "builder"))  # the private key file is no public key


def test_sign_command_and_bad_keys(art, keys, tmp_path, capsys):
    code, out, err = run_cli(capsys, "sign", art, "--key", keys / "builder")
    assert code == 0, err
    runtime.load(str(art), public_key=str(keys / "builder.pub"))
    for key, message in [
        (keys / "builder.pub", "is a public key; --sign needs the private key"),
        (tmp_path / "missing", "cannot read signing key"),
        (art / "manifest.json", "is not a PEM private key"),
    ]:
        code, _, err = run_cli(capsys, "sign", art, "--key", key)
        assert code == 1 and message in err and one_line_error(err), err
    with open(art / "model.so", "r+b") as f:
        f.seek(100)
        f.write(b"\x00\x01")
    code, _, err = run_cli(capsys, "sign", art, "--key", keys / "builder")
    assert code == 1 and "not signing: artifact file altered" in err
    # --sign with a bad key fails before the slow compile, leaving nothing
    out_dir = tmp_path / "never"
    code, _, err = run_cli(capsys, "--alpha", "0.25", "--resolution", "32", "--sign", keys / "builder.pub", "--output", out_dir)
    assert code == 1 and "needs the private key" in err and not out_dir.exists()


# ------------------------------------------------------------------- the C++ side: trust.h and mnet-run

HARNESS = r"""
#include "trust.h"
#include <iostream>
#include <sstream>
int main() {
  std::string line;
  while (std::getline(std::cin, line)) {
    std::istringstream in(line);
    std::string op, a, b, c;
    in >> op >> a >> b >> c;
    auto bytes = [](const std::string& hex) {
      std::vector<uint8_t> v(hex.size() / 2);
      if (!v.empty()) mnet_trust::FromHex(hex, v.data(), v.size());
      return v;
    };
    if (a == "-") a.clear();
    if (b == "-") b.clear();
    if (op == "sha256") {
      mnet_trust::Sha256 h; auto v = bytes(a); h.Update(v.data(), v.size());
      auto d = h.Final(); std::cout << mnet_trust::Hex(d.data(), d.size()) << "\n";
    } else if (op == "sha512") {
      mnet_trust::Sha512 h; auto v = bytes(a); h.Update(v.data(), v.size());
      auto d = h.Final(); std::cout << mnet_trust::Hex(d.data(), d.size()) << "\n";
    } else if (op == "verify") {
      auto pk = bytes(a), msg = bytes(b), sig = bytes(c);
      std::cout << (pk.size() == 32 && sig.size() == 64 && mnet_trust::Ed25519Verify(pk.data(), msg.data(), msg.size(), sig.data())) << "\n";
    } else if (op == "pubkey") {
      auto text = bytes(a); uint8_t key[32];
      bool ok = mnet_trust::ParsePublicKey(std::string(text.begin(), text.end()), key);
      std::cout << (ok ? mnet_trust::Hex(key, 32) : "invalid") << "\n";
    } else if (op == "json") {
      auto text = bytes(a);
      try { mnet_trust::JsonReader(std::string(text.begin(), text.end())).Parse(); std::cout << "ok\n"; }
      catch (const std::exception& e) { std::cout << "error\n"; }
    }
  }
}
"""


# trust.h built for this machine, and for 32- and 64-bit ARM boards run under qemu-user where installed
HARNESS_BUILDS = {
    "host": ("g++", []),
    "armv7": ("arm-linux-gnueabihf-g++", ["qemu-arm-static", "-L", "/usr/arm-linux-gnueabihf"]),
    "aarch64": ("aarch64-linux-gnu-g++", ["qemu-aarch64-static", "-L", "/usr/aarch64-linux-gnu"]),
}


@pytest.fixture(scope="module", params=list(HARNESS_BUILDS))
def harness(request, tmp_path_factory):
    compiler, emulate = HARNESS_BUILDS[request.param]
    missing = [t for t in [compiler] + emulate[:1] if shutil.which(t) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (see .ci/run)")
    folder = tmp_path_factory.mktemp(f"harness-{request.param}")
    (folder / "h.cc").write_text(HARNESS)
    exe = folder / "h"
    subprocess.run([compiler, "-std=c++17", "-O2", "-Wall", "-Wextra", "-Werror", "-I", str(TRUST_H.parent), str(folder / "h.cc"),
                    "-o", str(exe)], check=True, capture_output=True)

    def ask(lines: list[str]) -> list[str]:
        proc = subprocess.run([*emulate, str(exe)], input="\n".join(lines) + "\n", capture_output=True, text=True, check=True)
        return proc.stdout.split()

    return ask


def test_cpp_sha2_matches_hashlib(harness):
    rng = random.Random(5)
    messages = [rng.randbytes(n) for n in [0, 1, 3, 55, 56, 57, 63, 64, 65, 111, 112, 113, 127, 128, 129, 1000, 5000]]
    hexes = [m.hex() or "-" for m in messages]
    assert harness([f"sha256 {h}" for h in hexes]) == [hashlib.sha256(m).hexdigest() for m in messages]
    assert harness([f"sha512 {h}" for h in hexes]) == [hashlib.sha512(m).hexdigest() for m in messages]


def test_cpp_ed25519_matches_cryptography(harness):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    rng = random.Random(7)
    lines, expected = [], []
    pk = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"  # RFC 8032 7.1 test 1
    sig = "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
    lines += [f"verify {pk} - {sig}", f"verify {pk} 00 {sig}"]
    expected += ["1", "0"]
    for i in range(40):
        key = Ed25519PrivateKey.generate()
        public = key.public_key().public_bytes_raw()
        message = rng.randbytes(rng.choice([0, 1, 32, 64, 100, 1000]))
        signature = bytearray(key.sign(message))
        kind = i % 4
        if kind == 1:  # a flipped bit anywhere in the signature
            signature[rng.randrange(64)] ^= 1 << rng.randrange(8)
        elif kind == 2 and message:  # another message
            message = bytes([message[0] ^ 1]) + message[1:]
        elif kind == 3:  # S + L: same point, non-canonical scalar
            s = int.from_bytes(signature[32:], "little") + runtime._L
            if s < 2**256:
                signature[32:] = s.to_bytes(32, "little")
        try:
            key.public_key().verify(bytes(signature), message)
            valid = True
        except Exception:
            valid = False
        assert runtime.ed25519_verify(public, message, bytes(signature)) == valid
        lines.append(f"verify {public.hex()} {message.hex() or '-'} {bytes(signature).hex()}")
        expected.append("1" if valid else "0")
    assert harness(lines) == expected
    assert expected.count("1") >= 10 and expected.count("0") >= 20


def test_cpp_public_key_and_json_parsing(harness, keys):
    pem = (keys / "builder.pub").read_bytes()
    raw = runtime.ed25519_public_key(str(keys / "builder.pub"))
    private = (keys / "builder").read_bytes()
    answers = harness([f"pubkey {pem.hex()}", f"pubkey {raw.hex().encode().hex()}", f"pubkey {private.hex()}", "pubkey 00"])
    assert answers == [raw.hex(), raw.hex(), "invalid", "invalid"]
    docs = ['{"a": [1, 2.5e3, -0, "x\\u00e9\\ud83d\\ude00"], "b": {"c": null, "d": true}}', "[]", '"s"',
            '{"a": 1, "a": 2}', "[1,]", "{'a': 1}", "[NaN]", "[1e999]", '"\\ud800"', "[" * 100 + "]" * 100, "[1] x", "01"]
    assert harness([f"json {d.encode().hex()}" for d in docs]) == ["ok"] * 3 + ["error"] * 9


@pytest.fixture(scope="module")
def host_runner(tmp_path_factory):
    if shutil.which(os.environ.get("CXX", "g++")) is None:
        pytest.skip("g++ not installed (apt-get install g++)")
    kit = devicekit.host_runtime()
    return kit, devicekit.build_app(kit, out=tmp_path_factory.mktemp("app") / "mnet-run")


def mnet_run(runner, kit, *args, emulate=()):
    env = dict(os.environ, LD_LIBRARY_PATH=os.pathsep.join(str(d) for d in kit.lib_dirs))
    proc = subprocess.run([*emulate, str(runner), *map(str, args)], capture_output=True, text=True, env=env, timeout=600)
    return proc.returncode, proc.stdout, proc.stderr


def test_cpp_runner_checks_the_artifact_before_dlopen(host_runner, compiled, keys, tmp_path, monkeypatch):
    """The C++ runner (natively on x86): sha256 of model.so against the manifest by default, the signature
    with --public-key, and exit code 3 for an artifact that fails its check."""
    kit, app = host_runner
    art = tmp_path / "signed"
    shutil.copytree(compiled(0.25, 64, seed=3, sign=str(keys / "builder")), art)
    lib = art / "model.so"
    x = np.random.default_rng(1).standard_normal((1, 3, 64, 64)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    expected = runtime.load(str(art))(x)
    code, out, err = mnet_run(app, kit, lib, "--input", tmp_path / "x.npy", "--output", tmp_path / "y.npy")
    assert code == 0 and "verified:" in out and "mnet-run: ok" in out, err
    monkeypatch.delenv("TVM_NUM_THREADS", raising=False)  # runtime.load above set it in this process
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    code, out, err = mnet_run(app, kit, lib)
    pool = "the artifact's" if runtime.physical_cores() > 1 else "TVM's"  # one thread runs no pool of its own
    assert f"threads: {runtime.physical_cores()} ({pool} pool)\n" in out, out  # one per core: TVM's x86 default is half the CPUs
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, rtol=0, atol=1e-5)
    code, out, err = mnet_run(app, kit, lib, "--public-key", keys / "builder.pub")
    assert code == 0 and "signed by key" in out and "mnet-run: ok" in out, err
    code, out, err = mnet_run(app, kit, lib, "--public-key", keys / "other.pub")
    assert code == 3 and "signature check failed" in err and len(err.strip().splitlines()) == 1, err
    assert "model:" not in out  # refused before the library was opened
    np.save(tmp_path / "nan.npy", np.where(x > 2, np.nan, x).astype("float32"))
    code, _, err = mnet_run(app, kit, lib, "--input", tmp_path / "nan.npy")
    assert code == 1 and "NaN or infinite" in err
    with open(lib, "r+b") as f:
        f.seek(2000)
        f.write(b"\xcc\xcc")
    code, out, err = mnet_run(app, kit, lib)
    assert code == 3 and "altered (sha256 mismatch)" in err, err
    lone = tmp_path / "lone" / "model.so"
    lone.parent.mkdir()
    shutil.copy(compiled(0.25, 64, seed=3, sign=str(keys / "builder")) / "model.so", lone)
    code, _, err = mnet_run(app, kit, lone)
    assert code == 3 and "no manifest.json beside" in err
    code, out, err = mnet_run(app, kit, lone, "--no-verify", "--shape", "1,3,64,64")  # the documented way out
    assert code == 0 and "verified:" not in out and "mnet-run: ok" in out, err
    code, _, err = mnet_run(app, kit, lone, "--no-verify", "--public-key", keys / "builder.pub")
    assert code == 2 and "cannot go with --no-verify" in err
    (art / "manifest.sig").unlink()
    code, _, err = mnet_run(app, kit, lib, "--public-key", keys / "builder.pub")
    assert code == 3 and "is not signed" in err


AARCH64 = pytest.mark.skipif(
    any(shutil.which(t) is None for t in ("aarch64-linux-gnu-g++", "qemu-aarch64-static")),
    reason="aarch64-linux-gnu-g++ / qemu-aarch64-static not installed (apt-get install g++-aarch64-linux-gnu qemu-user-static)",
)


@AARCH64
def test_signed_arm_artifact_in_the_cpp_runner_under_qemu(keys, tmp_path):
    """The closing demo on an emulated Cortex-A72: a signed rpi4 artifact runs with the right key, is
    refused (exit 3, before dlopen) with another key, and refused when model.so was swapped."""
    from mnet_compile.pipeline import CompileRequest, compile_model

    art = compile_model(CompileRequest(alpha=0.25, resolution=64, target="rpi4", output=str(tmp_path / "rpi4"),
                                       sign=str(keys / "builder")), log=lambda message: None)
    kit = devicekit.fetch_runtime("aarch64")
    app = devicekit.build_app(kit)
    qemu = devicekit.emulator("aarch64", "cortex-a72")
    code, out, err = mnet_run(app, kit, art / "model.so", "--public-key", keys / "builder.pub", emulate=qemu)
    assert code == 0 and "signed by key" in out and "mnet-run: ok" in out, err
    code, out, err = mnet_run(app, kit, art / "model.so", "--public-key", keys / "other.pub", emulate=qemu)
    assert code == 3 and "signature check failed" in err and "model:" not in out, err
    with open(art / "model.so", "r+b") as f:
        f.seek(4096)
        f.write(b"\x1f\x20\x03\xd5")  # an AArch64 NOP over code
    code, out, err = mnet_run(app, kit, art / "model.so", "--public-key", keys / "builder.pub", emulate=qemu)
    assert code == 3 and "sha256 mismatch" in err
