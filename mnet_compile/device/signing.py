"""Ed25519 signing of artifacts, on the host (the `cryptography` package); devices only verify.

    mnet-compile keygen keys/builder             # keys/builder (private, mode 600) and keys/builder.pub
    mnet-compile --alpha 0.25 --sign keys/builder
    runtime.load(folder, public_key="keys/builder.pub")      # or: mnet-run ./model.so --public-key ...

The signature (manifest.sig: 128 hex digits) covers the exact bytes of manifest.json, which lists the
sha256 and size of every artifact file; so it vouches for the whole folder. It proves that the holder of
the private key signed this manifest, nothing about what the model computes or whether the key was kept safe.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from ..errors import MnetError
from .runtime import MANIFEST, SIGNATURE, ArtifactError, ed25519_public_key, read_manifest


def fingerprint(public_key: bytes) -> str:
    """A short name for a public key: the first 16 hex digits of its sha256."""
    return hashlib.sha256(public_key).hexdigest()[:16]


def generate_key(path: str | os.PathLike, force: bool = False) -> tuple[Path, Path]:
    """Write a new Ed25519 key pair: PATH (private, PKCS#8 PEM, mode 600) and PATH.pub (PEM); return both."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    private, public = Path(path), Path(f"{path}.pub")
    for p in (private, public):
        if p.exists() and not force:
            raise MnetError(f"{p} already exists; pass --force to replace it")
        if p.is_dir():
            raise MnetError(f"{p} is a folder")
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    try:
        private.parent.mkdir(parents=True, exist_ok=True)
        _write_new(private, private_pem, 0o600)
        _write_new(public, public_pem, 0o644)
    except OSError as exc:
        raise MnetError(f"cannot write the key pair {private}: {exc.strerror or exc}") from None
    return private, public


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Write through a temporary file created with `mode` (a private key is never readable by others)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def load_private_key(path: str | os.PathLike):
    """An Ed25519 private key from a PEM file (`mnet-compile keygen`, or `openssl genpkey -algorithm ed25519`)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise MnetError(f"cannot read signing key {path}: {exc.strerror or exc}") from None
    if b"PUBLIC KEY" in data and b"PRIVATE KEY" not in data:
        raise MnetError(f"{path} is a public key; --sign needs the private key (the file without .pub)")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise MnetError(f"signing key {path} is encrypted; mnet-compile needs an unencrypted key file") from None
    except (ValueError, TypeError) as exc:
        raise MnetError(f"{path} is not a PEM private key ({' '.join(str(exc).split())[:120]})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise MnetError(f"signing key {path} is not an Ed25519 key ({type(key).__name__.lstrip('_')})")
    return key


def public_bytes(private_key) -> bytes:
    return private_key.public_key().public_bytes_raw()


def sign_folder(folder: str | os.PathLike, private_key) -> Path:
    """Write <folder>/manifest.sig: the Ed25519 signature of manifest.json's bytes, in hex."""
    folder = Path(folder)
    data = (folder / MANIFEST).read_bytes()
    signature = private_key.sign(data)
    sig_path = folder / SIGNATURE
    with open(sig_path, "w") as f:
        f.write(signature.hex() + "\n")
    return sig_path


def sign_artifact(folder: str | os.PathLike, key_path: str | os.PathLike) -> Path:
    """`mnet-compile sign DIR --key KEY`: check an existing artifact's files, then sign its manifest."""
    key = load_private_key(key_path)
    try:
        read_manifest(str(folder))  # never vouch for a folder whose files do not match its manifest
    except ArtifactError as exc:
        raise MnetError(f"not signing: {exc}") from None
    try:
        path = sign_folder(folder, key)
    except OSError as exc:
        raise MnetError(f"cannot write {Path(folder) / SIGNATURE}: {exc.strerror or exc}") from None
    read_manifest(str(folder), public_key=public_bytes(key))  # the loader's pure-Python verify agrees
    return path


def describe_public_key(path: str | os.PathLike) -> str:
    """`<fingerprint>` of a public key file (a one-line ArtifactError if it is no Ed25519 public key)."""
    return fingerprint(ed25519_public_key(os.fspath(path)))
