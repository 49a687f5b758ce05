"""The device-side loader of mnet-compile artifacts. Standalone: needs only numpy and the TVM runtime.

Copy this file onto the device and run with TVM_USE_RUNTIME_LIB=1 (only libtvm_runtime is loaded):

    import runtime
    model = runtime.load("mobilenet_v1_0.25_224_rpi4")
    logits = model(x)                      # x: float32 array of manifest["input"]["shape"]
    top5 = model.classify(x, k=5)          # [(class index, probability), ...]
    print(model.benchmark())               # {"median_ms": ..., "p90_ms": ..., ...}
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import re
import time

import numpy as np

FORMAT_VERSION = 1
LIBRARY = "model.so"
MANIFEST = "manifest.json"
STAGE_FUNCTION = "mnet_stage_input"  # as export/input_stage.py: copies the input in, counts non-finite values
STAGE_SLOTS = 64
POOL_FUNCTION = "mnet_thread_pool"  # as export/thread_pool.py: the artifact's own thread pool
_ARCH_ALIASES = {"arm64": "aarch64", "amd64": "x86_64", "armv7": "armv7l", "armv8l": "armv7l"}


class ArtifactError(Exception):
    """The artifact or the input does not fit: a one-line message for the user."""

    def __init__(self, message: str = ""):
        super().__init__(_one_line(message, 600))


def _one_line(text, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _machine(name: str) -> str:
    name = name.lower()
    return _ARCH_ALIASES.get(name, name)


def sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------------------
# Layout: every file the manifest names is a plain name inside the artifact folder.

SIGNATURE = "manifest.sig"  # optional: Ed25519 signature (hex) over the exact bytes of manifest.json
MAX_MANIFEST_BYTES = 1 << 20
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._+-]{0,127}")  # no separators, not hidden, no `..`
_SHA256 = re.compile(r"[0-9a-f]{64}")
_DTYPES = ("float32", "float16", "float64", "int8", "uint8", "int16", "int32", "int64")  # numpy's names
_MAX_ELEMENTS = 1 << 28  # of one input or output tensor


def _member(folder: str, name: str, what: str) -> str:
    """The path of `name` inside `folder`: a regular file that does not lead out of the folder."""
    file_path = os.path.join(folder, name)
    real_folder = os.path.realpath(folder)
    real = os.path.realpath(file_path)
    if os.path.commonpath([real_folder, real]) != real_folder or real == real_folder:
        raise ArtifactError(f"{what} {file_path} is a link that leaves the artifact folder")
    if not os.path.lexists(file_path):
        raise ArtifactError(f"artifact file missing: {file_path}")
    if not os.path.isfile(real):
        raise ArtifactError(f"{what} {file_path} is not a regular file")
    return file_path


def _read_small(file_path: str, limit: int, what: str) -> bytes:
    try:
        with open(file_path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as exc:
        raise ArtifactError(f"cannot read {file_path}: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise ArtifactError(f"{file_path} is too large for {what} (over {limit} bytes)")
    return data


# ---------------------------------------------------------------------------------------------------------
# Schema: types, required fields, consistent shapes. Each violation is one ArtifactError naming the field.


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return (isinstance(v, float) and math.isfinite(v)) or _is_int(v)


class _Schema:
    def __init__(self, manifest_path: str):
        self.where = manifest_path

    def fail(self, field: str, problem: str):
        raise ArtifactError(_one_line(f"{self.where}: {field} {problem}"))

    def obj(self, parent: dict, key: str, field: str, required: bool = True):
        if key not in parent:
            if required:
                self.fail(field, "is missing")
            return None
        if not isinstance(parent[key], dict):
            self.fail(field, f"must be an object, not {type(parent[key]).__name__}")
        return parent[key]

    def string(self, parent: dict, key: str, field: str, required: bool = True, choices=None):
        if key not in parent:
            if required:
                self.fail(field, "is missing")
            return None
        value = parent[key]
        if not isinstance(value, str) or len(value) > 4096:
            self.fail(field, "must be a string")
        if choices is not None and value not in choices:
            self.fail(field, f"must be one of {', '.join(choices)}, not {value[:40]!r}")
        return value

    def optional(self, parent: dict, key: str, field: str, check) -> None:
        if key in parent and parent[key] is not None and not check(parent[key]):
            self.fail(field, "has the wrong type")

    def shape(self, parent: dict, field: str) -> list:
        shape = parent.get("shape")
        if not isinstance(shape, list) or not 1 <= len(shape) <= 8 or not all(_is_int(d) and 1 <= d <= 1 << 24 for d in shape):
            self.fail(f"{field}.shape", "must be a list of 1 to 8 positive integers")
        if math.prod(shape) > _MAX_ELEMENTS:
            self.fail(f"{field}.shape", f"has more than {_MAX_ELEMENTS} elements")
        return shape


def validate_manifest(manifest, manifest_path: str = MANIFEST) -> dict:
    """Check a parsed manifest against the format's schema; raise ArtifactError (one line) on the first violation."""
    s = _Schema(manifest_path)
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{manifest_path}: not a JSON object")
    if manifest.get("format_version") != FORMAT_VERSION or not _is_int(manifest.get("format_version")):
        raise ArtifactError(f"{manifest_path}: unsupported format (expected format_version {FORMAT_VERSION})")
    s.string(manifest, "model", "model")
    for key in ("alpha",):
        s.optional(manifest, key, key, _is_number)
    for key in ("resolution", "classes"):
        s.optional(manifest, key, key, _is_int)
    for key in ("weights", "source", "schedules"):
        s.optional(manifest, key, key, lambda v: isinstance(v, dict))
    for key in ("tvm_version", "tvm_ffi_version", "created"):
        s.optional(manifest, key, key, lambda v: isinstance(v, str))
    schedules = manifest.get("schedules")
    if isinstance(schedules, dict):  # what the build applied: informational, but typed (`mnet-compile profile`)
        for key in ("family", "records"):
            s.optional(schedules, key, f"schedules.{key}", lambda v: isinstance(v, str))
        for key in ("tuned", "transferred", "kernels"):
            s.optional(schedules, key, f"schedules.{key}", lambda v: _is_int(v) and v >= 0)
        per_kernel = s.obj(schedules, "per_kernel", "schedules.per_kernel", required=False) or {}
        for name, info in per_kernel.items():
            if not isinstance(info, dict):
                s.fail(f"schedules.per_kernel.{name[:80]}", "must be an object with flops and schedule")
            s.optional(info, "flops", f"schedules.per_kernel.{name[:80]}.flops", lambda v: _is_int(v) and v >= 0)
            s.string(info, "schedule", f"schedules.per_kernel.{name[:80]}.schedule", required=False, choices=("record", "transferred", "default"))

    inp = s.obj(manifest, "input", "input")
    s.string(inp, "name", "input.name")
    in_shape = s.shape(inp, "input")
    s.string(inp, "dtype", "input.dtype", choices=_DTYPES)
    layout = s.string(inp, "layout", "input.layout", required=False, choices=("NCHW", "NHWC")) or "NCHW"

    out = s.obj(manifest, "output", "output")
    s.shape(out, "output")
    s.string(out, "dtype", "output.dtype", choices=_DTYPES)
    s.string(out, "kind", "output.kind", required=False, choices=("logits", "probabilities"))

    pre = s.obj(manifest, "preprocessing", "preprocessing", required=False)
    if pre is not None:
        if len(in_shape) != 4:
            s.fail("input.shape", "must have 4 dimensions for an image model with preprocessing")
        height, width, channels = in_shape[1:] if layout == "NHWC" else (in_shape[2], in_shape[3], in_shape[1])
        s.string(pre, "channel_order", "preprocessing.channel_order", choices=("RGB", "BGR"))
        if channels != 3:
            s.fail("input.shape", f"has {channels} channels; an RGB image model has 3")
        if not (_is_number(pre.get("scale")) and abs(pre["scale"]) <= 1e6):
            s.fail("preprocessing.scale", "must be a number from -1e6 to 1e6")
        for key in ("mean", "std"):  # bounded, so that a normalized image stays finite in float32
            value = pre.get(key)
            values = value if isinstance(value, list) else [value]
            if not values or len(values) not in (1, channels) or not all(_is_number(v) and abs(v) <= 1e6 for v in values):
                s.fail(f"preprocessing.{key}", f"must be a number from -1e6 to 1e6 or a list of {channels}")
            if key == "std" and any(abs(v) < 1e-6 for v in values):
                s.fail("preprocessing.std", "must not be zero (at least 1e-6 in size)")
        if "center_crop" in pre and pre["center_crop"] != [height, width]:
            s.fail("preprocessing.center_crop", f"must be the input's height and width, [{height}, {width}]")
        if "resize_shorter" in pre and not (_is_int(pre["resize_shorter"]) and 1 <= pre["resize_shorter"] <= 16384):
            s.fail("preprocessing.resize_shorter", "must be an integer from 1 to 16384")

    target = s.obj(manifest, "target", "target")
    s.string(target, "preset", "target.preset")
    s.string(target, "arch", "target.arch")
    tvm_target = s.obj(target, "tvm", "target.tvm")
    s.string(tvm_target, "kind", "target.tvm.kind")

    files = s.obj(manifest, "files", "files")
    if LIBRARY not in files:
        raise ArtifactError(f"{manifest_path} lists no {LIBRARY}")
    for name, meta in files.items():
        if not _PLAIN_NAME.fullmatch(name) or name in (MANIFEST, SIGNATURE):
            s.fail("files", f"names {name[:80]!r}: an artifact file must be a plain name inside the folder")
        if not isinstance(meta, dict):
            s.fail(f"files.{name}", "must be an object with sha256 and bytes")
        if not isinstance(meta.get("sha256"), str) or not _SHA256.fullmatch(meta["sha256"]):
            s.fail(f"files.{name}.sha256", "must be 64 lowercase hex digits")
        if "bytes" in meta and not (_is_int(meta["bytes"]) and meta["bytes"] >= 0):
            s.fail(f"files.{name}.bytes", "must be a non-negative integer")
    return manifest


def _parse_json(data: bytes, manifest_path: str):
    def no_constants(name):
        raise ValueError(f"{name} is not JSON")

    def no_duplicates(pairs):
        keys = [k for k, _ in pairs]
        if len(set(keys)) != len(keys):
            raise ValueError(f"duplicate key {next(k for k in keys if keys.count(k) > 1)!r}")
        return dict(pairs)

    try:
        return json.loads(data.decode("utf-8"), parse_constant=no_constants, object_pairs_hook=no_duplicates)
    except RecursionError:
        raise ArtifactError(f"cannot read {manifest_path}: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ArtifactError(_one_line(f"cannot read {manifest_path}: {exc}")) from None


def read_manifest(path: str, public_key=None) -> dict:
    """Read and check an artifact's manifest (signature, schema) and the checksums of all its files.

    With `public_key` (see ed25519_public_key) the folder must hold manifest.sig, an Ed25519 signature of
    manifest.json's exact bytes by that key; it is checked before the manifest is parsed.
    """
    path = os.fspath(path)
    if "\x00" in path or not os.path.isdir(path):
        raise ArtifactError(f"artifact folder not found: {path!r}" if "\x00" in path else f"artifact folder not found: {path}")
    manifest_path = os.path.join(path, MANIFEST)
    if not os.path.lexists(manifest_path):
        raise ArtifactError(f"{path} is not an mnet-compile artifact: {MANIFEST} is missing")
    data = _read_small(_member(path, MANIFEST, "manifest"), MAX_MANIFEST_BYTES, "a manifest")
    if public_key is not None:
        key = ed25519_public_key(public_key)
        sig_path = os.path.join(path, SIGNATURE)
        if not os.path.lexists(sig_path):
            raise ArtifactError(f"artifact {path} is not signed ({SIGNATURE} is missing) and a public key was given")
        text = _read_small(_member(path, SIGNATURE, "signature"), 1024, "a signature").decode("ascii", "replace").strip()
        if not re.fullmatch(r"[0-9a-fA-F]{128}", text):
            raise ArtifactError(f"{sig_path} is not an Ed25519 signature (128 hex digits)")
        if not ed25519_verify(key, data, bytes.fromhex(text)):
            raise ArtifactError(f"signature check failed: {MANIFEST} of {path} was not signed by this key, or was changed")
    manifest = validate_manifest(_parse_json(data, manifest_path), manifest_path)
    for name, meta in manifest["files"].items():
        file_path = _member(path, name, "artifact file")
        try:
            size = os.path.getsize(file_path)
        except OSError as exc:
            raise ArtifactError(f"cannot read {file_path}: {exc.strerror or exc}") from None
        if "bytes" in meta and size != meta["bytes"]:
            raise ArtifactError(f"artifact file altered (size {size}, manifest says {meta['bytes']}): {file_path}")
        try:
            digest = sha256(file_path)
        except OSError as exc:
            raise ArtifactError(f"cannot read {file_path}: {exc.strerror or exc}") from None
        if digest != meta["sha256"]:
            raise ArtifactError(f"artifact file altered (sha256 mismatch): {file_path}")
    return manifest


# ---------------------------------------------------------------------------------------------------------
# Ed25519 signature verification (RFC 8032), pure Python: the device needs no crypto library to check an
# artifact's origin. Verification only (no secrets here), so plain big-integer arithmetic is fine.

_P = 2**255 - 19
_L = 2**252 + 27742317777372353535851937790883648493
_D = -121665 * pow(121666, _P - 2, _P) % _P
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)
_SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")  # DER SubjectPublicKeyInfo of an Ed25519 key


def _pt_add(a, b):
    x1, y1, z1, t1 = a
    x2, y2, z2, t2 = b
    e0 = (y1 - x1) * (y2 - x2) % _P
    b0 = (y1 + x1) * (y2 + x2) % _P
    c0 = 2 * t1 * t2 * _D % _P
    d0 = 2 * z1 * z2 % _P
    e, f, g, h = b0 - e0, d0 - c0, d0 + c0, b0 + e0
    return e * f % _P, g * h % _P, f * g % _P, e * h % _P


def _pt_mul(scalar: int, point):
    result = (0, 1, 1, 0)
    while scalar:
        if scalar & 1:
            result = _pt_add(result, point)
        point = _pt_add(point, point)
        scalar >>= 1
    return result


def _pt_encode(point) -> bytes:
    x, y, z, _ = point
    zi = pow(z, _P - 2, _P)
    x, y = x * zi % _P, y * zi % _P
    return (y | (x & 1) << 255).to_bytes(32, "little")


def _pt_decode(data: bytes):
    y = int.from_bytes(data, "little")
    sign, y = y >> 255, y & ((1 << 255) - 1)
    if y >= _P:
        return None
    x2 = (y * y - 1) * pow(_D * y * y + 1, _P - 2, _P) % _P
    x = pow(x2, (_P + 3) // 8, _P)
    if (x * x - x2) % _P:
        x = x * _SQRT_M1 % _P
    if (x * x - x2) % _P or (x == 0 and sign):
        return None
    if x & 1 != sign:
        x = _P - x
    return x, y, 1, x * y % _P


_BASE = _pt_decode(bytes.fromhex("58" + "66" * 31))


def ed25519_verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """RFC 8032 Ed25519 verification: [S]B == R + [SHA-512(R || A || M)]A, compared as encodings."""
    if len(public_key) != 32 or len(signature) != 64:
        return False
    a = _pt_decode(bytes(public_key))
    s = int.from_bytes(signature[32:], "little")
    if a is None or s >= _L:
        return False
    k = int.from_bytes(hashlib.sha512(bytes(signature[:32]) + bytes(public_key) + bytes(message)).digest(), "little") % _L
    minus_a = ((_P - a[0]) % _P, a[1], a[2], (_P - a[3]) % _P)
    return _pt_encode(_pt_add(_pt_mul(s, _BASE), _pt_mul(k, minus_a))) == bytes(signature[:32])


def ed25519_public_key(key) -> bytes:
    """32 raw bytes from: 32 bytes, 64 hex digits, PEM text, or a key file (PEM `PUBLIC KEY`, as `mnet-compile
    keygen` and `openssl pkey -pubout` write it, or 64 hex digits); also an object with public_bytes_raw()."""
    if hasattr(key, "public_bytes_raw"):
        key = key.public_bytes_raw()
    if isinstance(key, (bytes, bytearray)) and len(key) == 32:
        return bytes(key)
    text = None
    if isinstance(key, str) and (re.fullmatch(r"[0-9a-fA-F]{64}", key.strip()) or key.lstrip().startswith("-----BEGIN")):
        text = key.strip()  # the key itself, not a file name
    elif isinstance(key, (str, os.PathLike)):
        try:
            with open(key, "rb") as f:
                text = f.read(4097).decode("ascii").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ArtifactError(_one_line(f"cannot read public key {os.fspath(key)}: {getattr(exc, 'strerror', None) or exc}")) from None
    if text is not None:
        if re.fullmatch(r"[0-9a-fA-F]{64}", text):
            return bytes.fromhex(text)
        pem = re.fullmatch(r"-----BEGIN PUBLIC KEY-----\s+([A-Za-z0-9+/=\s]+?)\s*-----END PUBLIC KEY-----", text)
        if pem:
            import base64
            import binascii

            try:
                der = base64.b64decode("".join(pem.group(1).split()), validate=True)
            except binascii.Error:
                der = b""
            if len(der) == 44 and der.startswith(_SPKI_PREFIX):
                return der[12:]
    raise ArtifactError("not an Ed25519 public key (expected a PEM PUBLIC KEY file, 64 hex digits or 32 bytes)")


def _bilinear_taps(n_in: int, n_out: int, first: int, count: int):
    """Source rows/columns and weights of output pixels first..first+count of an n_in -> n_out bilinear resize.

    Half-pixel centers without antialiasing: torch.nn.functional.interpolate(mode="bilinear", align_corners=False).
    """
    dst = np.arange(first, first + count, dtype=np.float32)  # float32 arithmetic, as torch does it
    src = np.maximum(np.float32(n_in / n_out) * (dst + np.float32(0.5)) - np.float32(0.5), np.float32(0))
    lo = np.minimum(src.astype(np.int64), n_in - 1)
    hi = np.minimum(lo + 1, n_in - 1)
    return lo, hi, (src - lo.astype(np.float32)).astype(np.float32)


def image_geometry(image_hw, manifest: dict):
    """(resized height, width), (crop top, left), (crop height, width) for an image of size image_hw."""
    shape = manifest["input"]["shape"]
    nhwc = manifest["input"].get("layout", "NCHW") == "NHWC"
    crop_h, crop_w = (shape[1], shape[2]) if nhwc else (shape[2], shape[3])
    pre = manifest.get("preprocessing", {})
    crop_h, crop_w = pre.get("center_crop", [crop_h, crop_w])
    short = int(pre.get("resize_shorter", int(min(crop_h, crop_w) * 256 / 224)))
    h, w = image_hw
    if h <= w:
        new_h, new_w = short, int(short * w / h)
    else:
        new_h, new_w = int(short * h / w), short
    if new_h < crop_h or new_w < crop_w:  # a crop wider than the resized image: grow until it fits
        grow = max(crop_h / new_h, crop_w / new_w)
        new_h, new_w = max(crop_h, int(round(new_h * grow))), max(crop_w, int(round(new_w * grow)))
    top, left = int(round((new_h - crop_h) / 2.0)), int(round((new_w - crop_w) / 2.0))
    return (new_h, new_w), (top, left), (crop_h, crop_w)


def preprocess(image: np.ndarray, manifest: dict, resize: bool = True) -> np.ndarray:
    """An already-decoded HxWx3 uint8 RGB image of any size -> the model input, as the manifest says.

    Resize the shorter side to preprocessing.resize_shorter (crop * 256 / 224) with bilinear interpolation,
    center-crop to the input size, scale, subtract the mean, divide by the std, lay out as the input (NCHW or
    NHWC). resize=False takes an image already of the input size and only normalizes it.
    """
    if not isinstance(manifest.get("preprocessing"), dict):
        raise ArtifactError("the manifest has no preprocessing: this model does not take images")
    pre = manifest["preprocessing"]
    shape = manifest["input"]["shape"]
    nhwc = manifest["input"].get("layout", "NCHW") == "NHWC"
    height, width, channels = (shape[1], shape[2], shape[3]) if nhwc else (shape[2], shape[3], shape[1])
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != channels or min(image.shape[:2]) < 1:
        raise ArtifactError(f"image must be an array of shape (height, width, {channels}), got {image.shape}")
    if not resize and image.shape != (height, width, channels):
        raise ArtifactError(f"image must be an array of shape {(height, width, channels)}, got {image.shape}")
    if pre["channel_order"] == "BGR":
        image = image[..., ::-1]
    x = image.astype(np.float32)
    if resize:
        (new_h, new_w), (top, left), (crop_h, crop_w) = image_geometry(image.shape[:2], manifest)
        r0, r1, ry = _bilinear_taps(image.shape[0], new_h, top, crop_h)
        c0, c1, cx = _bilinear_taps(image.shape[1], new_w, left, crop_w)
        ry, cx = ry[:, None, None], cx[None, :, None]
        x = (1 - ry) * ((1 - cx) * x[r0][:, c0] + cx * x[r0][:, c1]) + ry * ((1 - cx) * x[r1][:, c0] + cx * x[r1][:, c1])
    x = (x * np.float32(pre["scale"]) - np.float32(pre["mean"])) / np.float32(pre["std"])
    x = x[None] if nhwc else x.transpose(2, 0, 1)[None]
    return np.ascontiguousarray(x, dtype=manifest["input"].get("dtype", "float32"))


def _input_buffer(tvm, shape, dtype, device):
    """The input tensor every call reuses (64-byte aligned, as the kernels assume) and a numpy view of it, or
    (None, None) where there is no host view (a GPU, a numpy without DLPack): then each call copies anew.
    A fresh tensor per call cost 43 us at 1x3x128x128 here, a copy into the view 9 us."""
    if device.dlpack_device_type() != tvm.cpu().dlpack_device_type():
        return None, None
    try:
        buffer = tvm.runtime.empty(shape, dtype, device)
        view = np.from_dlpack(buffer)
    except (AttributeError, TypeError, BufferError, RuntimeError):
        return None, None
    return (buffer, view) if view.flags.writeable and view.shape == tuple(shape) else (None, None)


def _input_stage(tvm, library, buffer):
    """The artifact's input stage as a function of a flat C-contiguous input array, which copies it into
    `buffer` (the input tensor) and returns how many NaN and infinite values it holds; None where the
    artifact has none (older artifacts, GPU builds, inputs that are not float32)."""
    try:
        import tvm_ffi

        stage = library.get_function(STAGE_FUNCTION, query_imports=True)
        flat = buffer._create_view((math.prod(buffer.shape),))
        counts = tvm.runtime.tensor(np.zeros(STAGE_SLOTS, "int32"))
        view = np.from_dlpack(counts)
    except Exception:  # no such function (the runtime raises), or no tvm_ffi / DLPack here
        return None

    def run(x: np.ndarray) -> int:
        stage(tvm_ffi.from_dlpack(x), flat, counts)
        return int(view.sum()) if view.any() else 0

    return run


def _own_thread_pool(library) -> bool:
    """Points the artifact's parallel kernels at its own thread pool (export/thread_pool.cc; calls took 0.93-0.96x
    the time of TVM's pool's at 0.25-128, 0.97-0.99x at 0.5-224 on 2 x86 cores), sized as TVM's would be
    (TVM_NUM_THREADS, else OMP_NUM_THREADS: use_all_cores sets the first). False where TVM's pool stays: an
    older artifact, a GPU build, fewer than 2 threads or none set."""
    threads = os.environ.get("TVM_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "")).strip()
    if not threads.isdigit() or int(threads) < 2:
        return False
    try:
        start = library.get_function(POOL_FUNCTION, query_imports=True)
    except Exception:  # not in this artifact: the runtime raises
        return False
    return bool(start(int(threads)))


class CompiledModel:
    """A loaded artifact: call it on an input array to get the logits. One call at a time per loaded model
    (TVM's VM is not reentrant, and every call reuses one input buffer); load it once per thread."""

    def __init__(self, path: str, manifest: dict, device=None):
        import tvm
        from tvm.runtime.vm import VirtualMachine

        self.path = path
        self.manifest = manifest
        self.input_shape = tuple(manifest["input"]["shape"])
        self.input_dtype = manifest["input"]["dtype"]
        self.output_shape = tuple(manifest["output"]["shape"])
        self.output_dtype = manifest["output"]["dtype"]
        self._tensor = tvm.runtime.tensor
        lib_path = os.path.join(os.path.abspath(path), LIBRARY)
        try:
            library = tvm.runtime.load_module(lib_path)
        except Exception as exc:
            raise ArtifactError(_one_line(f"cannot load {lib_path}: {_first_line(exc)}")) from None
        gpu = manifest["target"]["tvm"]["kind"] == "cuda"
        if gpu != ("cuda" in _module_kinds(library)):
            raise ArtifactError(
                f"{lib_path} holds {'no ' if gpu else ''}CUDA code, but the manifest's target kind is "
                f"{manifest['target']['tvm']['kind']!r}"
            )
        try:
            self.device = device or (tvm.cuda(0) if gpu else tvm.cpu(0))
            if not self.device.exist:
                raise ArtifactError(f"artifact {path} needs a {self.device} device, which this machine lacks")
            self.own_thread_pool = not gpu and _own_thread_pool(library)  # before any kernel runs
            self._vm = VirtualMachine(library, self.device)
            self._main = self._vm["main"]
            self._input, self._staging = _input_buffer(tvm, self.input_shape, self.input_dtype, self.device)
            self._stage = _input_stage(tvm, library, self._input) if self._staging is not None else None
        except ArtifactError:
            raise
        except Exception as exc:
            raise ArtifactError(_one_line(f"cannot start {lib_path}: {_first_line(exc)}")) from None
        self._self_test()

    def _self_test(self) -> None:
        """One run on zeros: the compiled module must take the manifest's input and give its output.

        Catches an edited or mismatched manifest (shape, dtype, output kind) at load, not at the first call."""
        x = np.zeros(self.input_shape, self.input_dtype)
        try:
            y = self._output(self._run(x))
        except Exception as exc:
            # the VM's check names the parameter's annotation: R.Tensor((1, 3, 224, 224), dtype="float32")
            found = re.search(r'R\.Tensor\(\(([\d, ]*)\),\s*dtype="(\w+)"\)', str(exc))
            if not found:  # not the input: the code itself cannot run here (e.g. AMX tiles refused)
                raise ArtifactError(_one_line(f"{LIBRARY} of {self.path} cannot run here: {_first_line(exc)}")) from None
            raise ArtifactError(
                f"{LIBRARY} of {self.path} does not accept the manifest's input {self.input_shape} {self.input_dtype}: "
                f"it expects ({found.group(1)}) {found.group(2)}"
            ) from None
        if y.shape != self.output_shape or y.dtype != np.dtype(self.output_dtype):
            raise ArtifactError(
                f"{LIBRARY} of {self.path} returns {y.shape} {y.dtype}, the manifest says {self.output_shape} {self.output_dtype}"
            )
        if self.manifest["output"].get("kind") == "probabilities":
            flat = y.reshape(y.shape[0], -1).astype(np.float64) if y.ndim > 1 else y[None].astype(np.float64)
            quantized = self.manifest.get("quantization")
            output = quantized.get("output") if isinstance(quantized, dict) else None
            step = output.get("scale") if isinstance(output, dict) else None
            step = float(step) if isinstance(step, (int, float)) and 0 <= step <= 1 else 0.0
            slack = 1e-3 + flat.shape[1] * step / 2  # int8 probabilities: each rounded to half a step
            if not (np.all(flat >= -1e-6) and np.all(flat <= 1 + 1e-6) and np.allclose(flat.sum(axis=1), 1, atol=slack)):
                raise ArtifactError(f"the manifest of {self.path} says the output is probabilities, but it does not sum to 1")

    def _staged(self, x: np.ndarray):
        """(the tensor the VM takes, a host array of the same values): `x` copied into the kernels' aligned
        input buffer (no allocation per call), or into a new tensor where there is no host view."""
        if self._staging is None:
            return self._tensor(x, self.device), x
        np.copyto(self._staging, x)
        return self._input, self._staging

    def _staged_checked(self, x: np.ndarray):
        """The tensor the VM takes, holding `x` (C-contiguous, the input's shape and dtype), with `x`'s
        NaN and infinite values refused: counted by the artifact's input stage in the pass that copies
        `x` in, else by numpy after its copy."""
        bad = None
        if self._stage is not None:
            try:
                bad, tensor = self._stage(x.reshape(-1)), self._input
            except (BufferError, TypeError, ValueError):  # e.g. a read-only array: DLPack cannot say so
                pass
        if bad is None:
            tensor, staged = self._staged(x)  # checked there: the copy is in the cache
            bad = int(x.size - np.count_nonzero(np.isfinite(x))) if x.dtype.kind == "f" and not np.isfinite(staged).all() else 0
        if bad:
            raise ArtifactError(f"input holds {bad} NaN or infinite value{'s' if bad > 1 else ''}; refusing to run on it")
        return tensor

    def _run(self, x: np.ndarray):
        return self._main(self._staged(x)[0])

    @staticmethod
    def _output(out) -> np.ndarray:
        """The output as an array of its own. Through DLPack and a copy: Tensor.numpy() took 50-100 us
        right after a run here (1x1000 float32), against 10-30 us."""
        out = out if hasattr(out, "numpy") else out[0]
        try:
            return np.from_dlpack(out).copy()
        except (BufferError, TypeError, ValueError, RuntimeError):  # not in host memory (a GPU's output)
            return out.numpy()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """The model's output for `x`. An input holding NaN or infinity is refused (ArtifactError): the
        compiled ReLUs would turn NaN into plausible numbers, so such an input never gives an output."""
        x = np.asarray(x)
        if x.shape != self.input_shape:
            raise ArtifactError(f"input must have shape {self.input_shape}, got {x.shape}")
        if x.dtype != np.dtype(self.input_dtype):
            raise ArtifactError(f"input must have dtype {self.input_dtype}, got {x.dtype}")
        return self._output(self._main(self._staged_checked(np.ascontiguousarray(x))))

    def classify(self, x: np.ndarray, k: int = 5) -> list[tuple[int, float]]:
        """Top-k (class index, softmax probability) pairs for a batch-1 input."""
        logits = self(x)[0].astype(np.float64).ravel()
        if self.manifest["output"].get("kind") == "probabilities":  # the model ends in a softmax already
            probs = logits
        else:
            probs = np.exp(logits - logits.max())
            probs /= probs.sum()
        top = np.argsort(-probs, kind="stable")[: max(0, int(k))]
        return [(int(i), float(probs[i])) for i in top]

    def benchmark(self, repeat: int = 50, warmup: int = 5, x: np.ndarray | None = None) -> dict:
        """Wall-clock latency of single inferences (input checks included), in milliseconds."""
        if not _is_int(repeat) or repeat < 1 or not _is_int(warmup) or warmup < 0:
            raise ArtifactError(f"benchmark needs repeat >= 1 and warmup >= 0, got repeat={repeat!r}, warmup={warmup!r}")
        if x is None:
            x = np.random.default_rng(0).standard_normal(self.input_shape).astype(self.input_dtype)
        times = []
        for i in range(warmup + repeat):
            start = time.perf_counter()
            self(x)
            if i >= warmup:
                times.append((time.perf_counter() - start) * 1e3)
        times = np.array(times)
        return {
            "median_ms": float(np.median(times)),
            "p90_ms": float(np.percentile(times, 90)),
            "min_ms": float(times.min()),
            "runs": int(repeat),
        }


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    # TVM puts the message after a traceback: prefer the line that names the error
    named = [line for line in lines if re.match(r"(\w+Error|Error)\b", line)]
    return (named[-1] if named else lines[0] if lines else type(exc).__name__)[:300]


def _module_kinds(module) -> set:
    kinds, todo, seen = set(), [module], 0
    while todo and seen < 64:
        m = todo.pop()
        seen += 1
        kinds.add(m.kind)
        todo.extend(m.imports)
    return kinds


def physical_cores(cpus=None, sysfs: str = "/sys/devices/system/cpu") -> int | None:
    """Physical cores among the CPUs this process may run on (hyper-threads counted once); None if
    the kernel does not say (not Linux)."""
    cpus = sorted(os.sched_getaffinity(0)) if cpus is None else cpus
    cores = set()
    for cpu in cpus:
        try:
            with open(f"{sysfs}/cpu{cpu}/topology/thread_siblings_list") as f:
                cores.add(f.read().strip())
        except OSError:
            return None
    return len(cores) or None


def use_all_cores() -> None:
    """Size TVM's thread pool to the physical cores unless TVM_NUM_THREADS or OMP_NUM_THREADS says.

    TVM's own default halves the logical CPUs on x86 (it assumes hyper-threading): one thread on a
    2-vCPU VM, half the speed. The pool is sized when it first runs, so this acts before the first load."""
    if "TVM_NUM_THREADS" in os.environ or "OMP_NUM_THREADS" in os.environ:
        return
    cores = physical_cores()
    if cores:
        os.environ["TVM_NUM_THREADS"] = str(cores)


def load(path, device=None, public_key=None) -> CompiledModel:
    """Verify an artifact folder (signature if a public key is given, manifest, checksums, CPU
    architecture, the compiled module's input and output) and load it. Unless TVM_NUM_THREADS or
    OMP_NUM_THREADS is set, the CPU thread pool gets one thread per physical core (`use_all_cores`)."""
    path = os.fspath(path)
    use_all_cores()
    manifest = read_manifest(path, public_key)
    built_for = _machine(manifest["target"]["arch"])
    here = _machine(platform.machine())
    if built_for != here:
        raise ArtifactError(
            _one_line(f"artifact {path} was built for {built_for} ({manifest['target']['preset']}), this machine is {here}")
        )
    return CompiledModel(path, manifest, device)
