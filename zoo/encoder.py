"""ImageEncoder: a backbone with its own preprocessing, the object users load and fine-tune.

It takes RGB images [N, H, W, 3] as uint8 or as float in 0..255, resizes them to the training
resolution (or to the size given as `zoo.load(..., input_shape=...)`) and scales them to
[0, 1]; the backbone's first layer normalises by mean/std. So `encoder(images)` needs no
knowledge of how the encoder was trained.

It is registered with Keras (package "zoo"), so a model holding one saves with
`model.save("ft.keras")` and reloads with `keras.saving.load_model("ft.keras")` in Keras's safe
mode: its config is the backbone's functional config (standard layers only, with each layer's
trainable flag) plus the image size and the preset's metadata; no Lambda layer, no code.
"""
import warnings

import keras
import numpy as np
import tensorflow as tf

_ALLOWED_DTYPES = {"uint8", "int32", "int64", "float16", "bfloat16", "float32", "float64"}
# Largest image (height x width) the backbone runs on: with input_shape=(None, None, 3) a
# 4000 x 4000 image needs ~11 GB for a ResNet-18 at width 0.25 (its CIFAR stem keeps the full
# resolution) and crashes the process; above this limit an error asks for a resize instead.
MAX_PIXELS_PER_IMAGE = 2048 * 2048


def check_images(images, where="encoder"):
    """Raise a ValueError naming the problem and the fix for anything that is not a batch of
    RGB images [N, H, W, 3] of a numeric dtype."""
    shape = tuple(images.shape)
    dtype = getattr(images.dtype, "name", str(images.dtype))
    dtype = {"<dtype: 'uint8'>": "uint8"}.get(dtype, dtype)
    if dtype not in _ALLOWED_DTYPES:
        raise ValueError(f"{where}: images have dtype {dtype}; expected uint8 (0..255) or float (0..255). "
                         "Convert with np.asarray(images, np.uint8) or images.astype('float32').")
    if len(shape) == 3 and shape[-1] in (1, 3, 4):
        raise ValueError(f"{where}: got one image of shape {shape}; expected a batch [N, H, W, 3]. "
                         "Add a batch axis: images[None].")
    if len(shape) != 4:
        raise ValueError(f"{where}: images have shape {shape} (rank {len(shape)}); expected a batch of RGB "
                         "images [N, H, W, 3].")
    if shape[-1] != 3:
        fix = {1: "grayscale: repeat the channel, np.repeat(images, 3, axis=-1)",
               4: "RGBA: drop alpha, images[..., :3]"}.get(shape[-1], "convert them to RGB")
        hint = " (channels-first? transpose to [N, H, W, 3])" if shape[1] == 3 else ""
        raise ValueError(f"{where}: images have {shape[-1]} channels in shape {shape}; expected 3 (RGB): "
                         f"{fix}{hint}.")
    if 0 in shape[1:3]:
        raise ValueError(f"{where}: images of shape {shape} have no pixels (height or width 0); expected "
                         "images of at least 1 x 1 pixels. Check how they were read or cropped.")


def check_image_size(shape, where="encoder"):
    """Raise a ValueError if images of `shape` [N, H, W, 3] (H, W None: unknown) are larger than
    MAX_PIXELS_PER_IMAGE, the largest the backbone is run on."""
    height, width = shape[1], shape[2]
    if height is not None and width is not None and height * width > MAX_PIXELS_PER_IMAGE:
        raise ValueError(f"{where}: images of {height} x {width} pixels are larger than the "
                         f"{MAX_PIXELS_PER_IMAGE} pixels per image (zoo.encoder.MAX_PIXELS_PER_IMAGE) this encoder "
                         "runs on at their own size (input_shape=(None, None, 3)); that would need more memory "
                         "than a machine has. Resize them: zoo.load(name, input_shape=(S, S, 3)), e.g. S=512, "
                         "or resize the images before the call.")


@keras.saving.register_keras_serializable(package="zoo")
class ImageEncoder(keras.Model):
    """[N, H, W, 3] uint8 / float 0..255 -> [N, D] features of a self-supervised backbone.

    `image_size`: the size images are resized to before the backbone, an int (square), an
    (height, width) pair, or None to run the backbone on every batch at its own size.
    `metadata`: the preset's metadata dict (zoo.load sets it), kept through model.save.
    A backbone with a dict of outputs (`block_encoder`) makes the encoder return that dict
    ({block: [N, C] or [N, h, w, C]}); `feature_dim` is then {block: C}."""

    def __init__(self, backbone, image_size, metadata=None, **kwargs):
        kwargs.setdefault("name", f"{backbone.name}_encoder")
        super().__init__(**kwargs)
        self.backbone = backbone
        self.metadata = metadata
        if image_size is None:
            self.image_size = None
        elif isinstance(image_size, (tuple, list)):
            self.image_size = (int(image_size[0]), int(image_size[1]))
        else:
            self.image_size = int(image_size)
        if isinstance(backbone.output, dict):
            shapes = backbone.compute_output_shape((None, None, None, 3))
            self.feature_dim = {block: shape[-1] for block, shape in shapes.items()}
        else:
            self.feature_dim = backbone.output_shape[-1]
        self._warned = set()  # the kinds of value warnings already given (once each)
        self.built = True  # the backbone is built; the wrapper has no variables of its own

    def __call__(self, images, *args, **kwargs):
        if isinstance(images, (list, tuple)):  # a nested list of pixel values, e.g. from JSON
            images = np.asarray(images)
        return super().__call__(images, *args, **kwargs)

    def call(self, images, training=False):
        check_images(images)
        if isinstance(images, (np.ndarray, tf.Tensor)) and tf.executing_eagerly():
            self._warn_about_values(images)
        x = tf.cast(images, tf.float32)
        # Always resize: a no-op at the training size (exact for bilinear), and it makes any
        # input size valid in the exported graph.
        if self.image_size is not None:
            size = self.image_size if isinstance(self.image_size, tuple) else (self.image_size,) * 2
            x = tf.image.resize(x, list(size), method="bilinear")
        else:
            check_image_size(tuple(images.shape))
            if None in tuple(images.shape[1:3]):  # size known only at run time (a traced graph)
                tf.debugging.assert_less_equal(
                    tf.shape(x)[1] * tf.shape(x)[2], MAX_PIXELS_PER_IMAGE,
                    message=f"encoder: images are larger than the {MAX_PIXELS_PER_IMAGE} pixels per image "
                            "(zoo.encoder.MAX_PIXELS_PER_IMAGE) this encoder runs on at their own size; resize "
                            "them: zoo.load(name, input_shape=(S, S, 3)), e.g. S=512.")
        return self.backbone(x / 255.0, training=training)

    def _warn_about_values(self, images):
        """Warn once each about values outside what the encoder expects: float images in 0..1,
        NaN or infinite values, values below 0 or above 255."""
        if not np.size(images):
            return
        values = np.asarray(images)
        floating = np.issubdtype(values.dtype, np.floating)
        finite = np.isfinite(values) if floating else None
        if floating and not finite.all() and "nonfinite" not in self._warned:
            self._warned.add("nonfinite")
            warnings.warn(f"ImageEncoder: images hold {int(values.size - finite.sum())} NaN or infinite values; "
                          "their features will be NaN. Check how the images were read or scaled.", stacklevel=3)
        kept = values[finite] if floating else values
        if not kept.size:
            return
        low, top = float(kept.min()), float(kept.max())
        if (low < 0 or top > 255) and "range" not in self._warned:
            self._warned.add("range")
            warnings.warn(f"ImageEncoder: pixel values from {low:g} to {top:g}, outside 0..255; this encoder "
                          "expects uint8-scale images (0..255). Clip or rescale them first.", stacklevel=3)
        elif floating and 0.0 < top <= 1.0 and low >= 0 and "unit" not in self._warned:
            self._warned.add("unit")
            warnings.warn("ImageEncoder: float images with values in 0..1; this encoder expects 0..255 "
                          "(uint8 scale). Multiply by 255 first.", stacklevel=3)

    def compute_output_shape(self, input_shape):
        if not isinstance(self.feature_dim, dict):
            return (input_shape[0], self.feature_dim)
        size = self.image_size if isinstance(self.image_size, tuple) else (self.image_size,) * 2
        size = tuple(input_shape[1:3]) if self.image_size is None else size
        return self.backbone.compute_output_shape((input_shape[0], *size, 3))

    def get_config(self):
        return {"name": self.name, "trainable": self.trainable,
                "backbone": keras.saving.serialize_keras_object(self.backbone),
                "image_size": list(self.image_size) if isinstance(self.image_size, tuple) else self.image_size,
                "metadata": self.metadata}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        # deserialised under the caller's safe mode: a functional model of registered layers
        backbone = keras.saving.deserialize_keras_object(config.pop("backbone"))
        return cls(backbone, **config)


def block_names(backbone):
    """The blocks of `backbone` a probe can read, from the input to the output: "stem",
    "stage1".."stage4" for a ResNet, "block1".."blockK" for a ViT."""
    from zoo.backbones import STAGE_NAMES
    from zoo.backbones import vit
    return vit.block_names(backbone) if vit.is_vit(backbone) else list(STAGE_NAMES)


def _check_blocks(blocks, backbone):
    """The block names (a trailing "_out" allowed), checked against `backbone`'s blocks."""
    valid = block_names(backbone)
    if isinstance(blocks, str):
        blocks = [blocks]
    names = [b[:-4] if isinstance(b, str) and b.endswith("_out") else b for b in blocks]
    unknown = [b for b in names if b not in valid]
    if unknown or not names or len(set(names)) != len(names):
        problem = (f"unknown block(s) {unknown}" if unknown else "no block" if not names else "a block named twice")
        raise ValueError(f"blocks={list(blocks)!r}: {problem}. Valid blocks of {backbone.name!r}, from the input to "
                         f"the output: {', '.join(valid)}, e.g. blocks={valid[-3:]!r}.")
    return names


def _pool(output, name):
    """Global average pooling of a block's output: over the map [N, h, w, C] of a ResNet stage,
    over the tokens [N, T, D] of a ViT block."""
    pooling = keras.layers.GlobalAveragePooling1D if len(output.shape) == 3 else keras.layers.GlobalAveragePooling2D
    return pooling(name=f"{name}_pool")(output)


def block_encoder(encoder, blocks, pooled=True):
    """An ImageEncoder returning a dict {block: features} of the named blocks of `encoder`'s
    backbone (`block_names(backbone)`: "stem", "stage1".."stage4" for a ResNet, "block1".."blockK"
    for a ViT), like timm's features_only=True: globally average-pooled [N, C] with
    `pooled=True`, else the block outputs (ResNet maps [N, h, w, C], at 32 px: stem and stage1
    32x32, stage2 16x16, stage3 8x8, stage4 4x4; ViT tokens [N, T, D]). Pooled "stage4" equals a
    ResNet encoder's own features; a ViT's features are its last block's tokens after the final
    LayerNorm, then mean-pooled, so pooled "blockK" differs from them by that norm. Shares the
    weights and the preprocessing; zoo.load(name, blocks=...) calls it."""
    backbone = encoder.backbone
    names = _check_blocks(blocks, backbone)
    if not isinstance(pooled, bool):
        raise ValueError(f"pooled={pooled!r}: expected True ([N, C] per block) or False (the block outputs).")
    outputs = {}
    for name in names:
        block = backbone.get_layer(f"{name}_out").output
        outputs[name] = _pool(block, name) if pooled else block
    kind = "pooled" if pooled else "maps"
    multi = keras.Model(backbone.input, outputs, name=f"{backbone.name}_{'_'.join(names)}_{kind}")
    return ImageEncoder(multi, encoder.image_size, metadata=encoder.metadata, name=f"{encoder.name}_blocks")


def layer_encoder(encoder, layer):
    """An ImageEncoder on the globally average-pooled output of an intermediate block of
    `encoder`'s backbone ("stem", "stage1".."stage4" of a ResNet, the last equal to the encoder
    itself; "block1".."blockK" of a ViT, mean-pooled tokens), for per-layer probes (RotNet's best
    CIFAR-10 features are those of block 2). Shares weights."""
    (name,) = _check_blocks([layer], encoder.backbone)
    pooled = _pool(encoder.backbone.get_layer(f"{name}_out").output, name)
    backbone = keras.Model(encoder.backbone.input, pooled, name=f"{encoder.backbone.name}_{name}")
    return ImageEncoder(backbone, encoder.image_size, name=f"{backbone.name}_encoder")
