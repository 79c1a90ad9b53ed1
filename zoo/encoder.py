"""ImageEncoder: a backbone with its own preprocessing, the object users load and fine-tune.

It takes RGB images [N, H, W, 3] as uint8 or as float in 0..255, resizes them to the training
resolution and scales them to [0, 1]; the backbone's first layer normalises by mean/std. So
`encoder(images)` needs no knowledge of how the encoder was trained.
"""
import warnings

import keras
import numpy as np
import tensorflow as tf

_ALLOWED_DTYPES = {"uint8", "int32", "int64", "float16", "bfloat16", "float32", "float64"}


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


class ImageEncoder(keras.Model):
    """[N, H, W, 3] uint8 / float 0..255 -> [N, D] features of a self-supervised backbone."""

    def __init__(self, backbone, image_size, **kwargs):
        kwargs.setdefault("name", f"{backbone.name}_encoder")
        super().__init__(**kwargs)
        self.backbone = backbone
        self.image_size = int(image_size)
        self.feature_dim = backbone.output_shape[-1]
        self._warned_range = False
        self.built = True  # the backbone is built; the wrapper has no variables of its own

    def call(self, images, training=False):
        check_images(images)
        if isinstance(images, (np.ndarray, tf.Tensor)) and tf.executing_eagerly() and not self._warned_range:
            self._warn_if_unit_range(images)
        x = tf.cast(images, tf.float32)
        # Always resize: a no-op at the training size (exact for bilinear), and it makes any
        # input size valid in the exported graph.
        x = tf.image.resize(x, [self.image_size, self.image_size], method="bilinear")
        return self.backbone(x / 255.0, training=training)

    def _warn_if_unit_range(self, images):
        if np.issubdtype(np.dtype(getattr(images.dtype, "as_numpy_dtype", images.dtype)), np.floating):
            top = float(np.max(images)) if np.size(images) else 0.0
            if 0.0 < top <= 1.0:
                self._warned_range = True
                warnings.warn("ImageEncoder: float images with values in 0..1; this encoder expects 0..255 "
                              "(uint8 scale). Multiply by 255 first.", stacklevel=3)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.feature_dim)
