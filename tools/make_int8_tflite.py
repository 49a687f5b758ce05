"""Full-integer .tflite files from Keras MobileNet v1/v2 (TFLiteConverter), for the int8 TFLite import tests.

Needs tensorflow (not a dependency of mnet-compile; CI does not install it): `pip install tensorflow-cpu==2.21.0`,
preferably in its own virtual environment. The weights are seeded (weights=None, then every conv, depthwise,
dense and BatchNorm parameter drawn from numpy.random.default_rng(seed) as mnet_compile/models/common.py draws
them: He-normal convs, BatchNorm gamma 0.5 + U(0, 1), beta 0.1 N, mean 0.1 N, variance 0.5 + 1.5 U), so the
activations have a real spread. The converter calibrates on 16 seeded smooth random images in [-1, 1] (a 7x7
grid of uniform values, bilinearly upsampled, plus noise); weights are int8 per channel, activations int8.

    python tools/make_int8_tflite.py tests/data/int8            # the small files the tests ship
    python tools/make_int8_tflite.py /work/exp/tfl --model v1 --alpha 1.0 --resolution 224 [--io float] [--logits]
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

# (model, alpha, resolution, io): what tests/data/int8 holds
SHIPPED = [("v1", 0.25, 128, "int8"), ("v1", 0.25, 128, "float"), ("v2", 0.35, 96, "int8"), ("ops", 1.0, 32, "float")]
LOGIT_STD = 3.0  # the classifier is rescaled to this spread of logits on the images: a softmax that is not flat


def ops_model(resolution: int):
    """A small model with the operators of the MobileNets' files and those they lack: PAD (asymmetric),
    AVERAGE_POOL_2D, ReLU (not 6), a residual ADD, a flatten (SHAPE/STRIDED_SLICE/PACK, RESHAPE), FULLY_CONNECTED,
    SOFTMAX; it compiles in seconds."""
    import keras
    from keras import layers

    x = inp = keras.Input((resolution, resolution, 3))
    x = layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(x)
    x = layers.ZeroPadding2D(((1, 2), (2, 1)))(x)
    x = layers.DepthwiseConv2D(3, activation="relu6")(x)
    x = layers.Conv2D(24, 1)(x)
    x = layers.Add()([x, layers.Conv2D(24, 1)(x)])
    x = layers.AveragePooling2D(pool_size=x.shape[1:3])(x)
    x = layers.Flatten()(x)
    x = layers.Dense(10, activation="softmax")(x)
    return keras.Model(inp, x)


def keras_model(model: str, alpha: float, resolution: int, seed: int, softmax: bool = True):
    import keras

    keras.utils.set_random_seed(seed)
    if model == "ops":
        net = ops_model(resolution)
    else:
        build = keras.applications.MobileNet if model == "v1" else keras.applications.MobileNetV2
        net = build(input_shape=(resolution, resolution, 3), alpha=alpha, weights=None, classes=1000,
                    classifier_activation="softmax" if softmax else None)
    rng = np.random.default_rng(seed)
    for layer in net.layers:
        kind = type(layer).__name__
        if kind in ("Conv2D", "DepthwiseConv2D"):
            w = layer.get_weights()
            fan_in = np.prod(w[0].shape[:3]) if kind == "Conv2D" else np.prod(w[0].shape[:2])
            w[0] = rng.standard_normal(w[0].shape) * (2.0 / fan_in) ** 0.5
            w[1:] = [0.1 * rng.standard_normal(b.shape) for b in w[1:]]
            layer.set_weights(w)
        elif kind == "BatchNormalization":
            n = layer.get_weights()[0].shape[0]
            layer.set_weights([0.5 + rng.random(n), 0.1 * rng.standard_normal(n), 0.1 * rng.standard_normal(n),
                               0.5 + 1.5 * rng.random(n)])  # fmt: skip
        elif kind == "Dense":
            w, b = layer.get_weights()
            layer.set_weights([rng.standard_normal(w.shape) / w.shape[0] ** 0.5, 0.1 * rng.standard_normal(b.shape)])
    return rescale_classifier(net, smooth_images(16, resolution, seed + 1))


def rescale_classifier(net, images):
    """Scale the last layer with weights (v1's conv_preds, v2's Dense) so its outputs have LOGIT_STD."""
    import keras

    last = [layer for layer in net.layers if layer.get_weights()][-1]
    features = keras.Model(net.input, last.input).predict(images, verbose=0)
    w, b = last.get_weights()
    logits = features.reshape(len(images), -1) @ w.reshape(-1, w.shape[-1]) + b
    factor = LOGIT_STD / logits.std()
    last.set_weights([w * factor, b * factor])
    return net


def smooth_images(count: int, resolution: int, seed: int) -> np.ndarray:
    """`count` NHWC float32 images in [-1, 1]: a 7x7 grid of uniform values, bilinear, plus N(0, 0.15) noise."""
    rng = np.random.default_rng(seed)
    pos = np.linspace(0, 6, resolution)
    i0 = np.minimum(pos.astype(int), 5)
    t = pos - i0
    out = []
    for _ in range(count):
        grid = rng.uniform(-1, 1, (7, 7, 3))
        rows = grid[i0] * (1 - t)[:, None, None] + grid[i0 + 1] * t[:, None, None]
        image = rows[:, i0] * (1 - t)[None, :, None] + rows[:, i0 + 1] * t[None, :, None]
        out.append(np.clip(image + rng.normal(0, 0.15, image.shape), -1, 1))
    return np.stack(out).astype(np.float32)


def convert(net, resolution: int, io: str, seed: int) -> bytes:
    import tensorflow as tf

    images = smooth_images(16, resolution, seed + 1)
    converter = tf.lite.TFLiteConverter.from_keras_model(net)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([images[i : i + 1]] for i in range(len(images)))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if io == "int8":
        converter.inference_input_type = converter.inference_output_type = tf.int8
    return converter.convert()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--model", choices=["v1", "v2", "ops"])
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--resolution", type=int)
    parser.add_argument("--io", choices=["int8", "float"], default="int8")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--logits", action="store_true", help="no softmax at the end (Keras classifier_activation=None)")
    args = parser.parse_args()
    jobs = [(args.model, args.alpha, args.resolution, args.io)] if args.model else SHIPPED
    os.makedirs(args.out_dir, exist_ok=True)
    for model, alpha, resolution, io in jobs:
        name = f"ops_{resolution}" if model == "ops" else f"mobilenet_{model}_{alpha:g}_{resolution}"
        name += "_logits" if args.logits else ""
        path = os.path.join(args.out_dir, f"{name}_{io}.tflite")
        data = convert(keras_model(model, alpha, resolution, args.seed, not args.logits), resolution, io, args.seed)
        with open(path + ".tmp", "wb") as f:
            f.write(data)
        os.replace(path + ".tmp", path)
        print(f"{path}: {len(data)} bytes")


if __name__ == "__main__":
    main()
