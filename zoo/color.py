"""CIE Lab colour, the quantised ab space and the colour-class tools of colorization (Zhang, Isola,
Efros, "Colorful Image Colorization", ECCV 2016).

- `rgb_to_lab` / `lab_to_rgb`: sRGB in [0, 1] <-> CIE Lab (D65 white), in TensorFlow: the sRGB
  transfer curve, the sRGB -> XYZ matrix and the CIE Lab formulas, with the constants that
  scikit-image's `rgb2lab` uses (so both agree to float precision). L is in [0, 100], a and b
  roughly in [-110, 100].
- `RgbToLightness`: a layer [N, H, W, 3] RGB in [0, 1] -> [N, H, W, 1] L / 100, the first layer of a
  backbone trained on lightness (zoo.backbones, in_channels=1), so that such an encoder still takes
  RGB images.
- `ab_bins()`: the centres of the grid-10 ab bins that sRGB colours fall in (see its docstring for
  why this is 261 bins and not the paper's 313).
- `soft_encode`: each pixel's ab as a distribution over its 5 nearest bins (Gaussian weights,
  sigma 5), the paper's targets.
- `class_rebalancing_weights`: w proportional to ((1 - lambda) p~ + lambda / Q)^-1, p~ the smoothed
  empirical bin distribution, normalised so that E_p~[w] = 1 (the paper's eq. 4); `bin_counts`
  counts a data set's pixels per bin, `cached_class_weights` does both once per data set and keeps
  the result in the zoo's cache (zoo.cache, folder "colorization").
- `annealed_mean`: the paper's decoding of a predicted distribution to one ab value (T = 0.38).
"""
import functools
import hashlib
import os

import keras
import numpy as np
import tensorflow as tf

from zoo.cache import cache_dir, write_atomically

# sRGB (IEC 61966-2-1) primaries -> CIE XYZ, D65; the matrix and white point scikit-image uses.
RGB_TO_XYZ = np.array([[0.412453, 0.357580, 0.180423],
                       [0.212671, 0.715160, 0.072169],
                       [0.019334, 0.119193, 0.950227]])
XYZ_TO_RGB = np.linalg.inv(RGB_TO_XYZ)
D65_WHITE = np.array([0.95047, 1.0, 1.08883])
_DELTA = 6.0 / 29.0  # CIE Lab: the cube root is replaced by a line below (6/29)^3

GRID = 10.0             # side of an ab bin
NEIGHBOURS = 5          # soft-encoding: bins each pixel's ab is spread over
SIGMA = 5.0             # soft-encoding and prior smoothing: Gaussian sigma, in ab units
REBALANCE_LAMBDA = 0.5  # weight of the uniform distribution in the rebalancing mix
TEMPERATURE = 0.38      # annealed mean


def rgb_to_lab(rgb):
    """[..., 3] sRGB in [0, 1] -> [..., 3] CIE Lab (D65), float32."""
    rgb = tf.cast(rgb, tf.float32)
    linear = tf.where(rgb > 0.04045, tf.pow((tf.maximum(rgb, 0.04045) + 0.055) / 1.055, 2.4), rgb / 12.92)
    xyz = tf.linalg.matvec(tf.constant(RGB_TO_XYZ, tf.float32), linear) / tf.constant(D65_WHITE, tf.float32)
    f = tf.where(xyz > _DELTA ** 3, tf.pow(tf.maximum(xyz, _DELTA ** 3), 1.0 / 3.0),
                 xyz / (3 * _DELTA ** 2) + 4.0 / 29.0)
    fx, fy, fz = tf.unstack(f, axis=-1)
    return tf.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], axis=-1)


def lab_to_rgb(lab):
    """[..., 3] CIE Lab (D65) -> [..., 3] sRGB, clipped to [0, 1] (colours outside the sRGB gamut
    are clipped per channel), float32."""
    lab = tf.cast(lab, tf.float32)
    l, a, b = tf.unstack(lab, axis=-1)
    fy = (l + 16.0) / 116.0
    f = tf.stack([fy + a / 500.0, fy, fy - b / 200.0], axis=-1)
    xyz = tf.where(f > _DELTA, tf.pow(f, 3.0), 3 * _DELTA ** 2 * (f - 4.0 / 29.0))
    linear = tf.linalg.matvec(tf.constant(XYZ_TO_RGB, tf.float32), xyz * tf.constant(D65_WHITE, tf.float32))
    linear = tf.clip_by_value(linear, 0.0, 1.0)
    return tf.where(linear > 0.0031308, 1.055 * tf.pow(tf.maximum(linear, 0.0031308), 1 / 2.4) - 0.055,
                    12.92 * linear)


def rgb_to_lightness(rgb):
    """[..., 3] sRGB in [0, 1] -> [..., 1] CIE lightness L / 100, in [0, 1]."""
    return rgb_to_lab(rgb)[..., :1] / 100.0


@keras.saving.register_keras_serializable(package="zoo")
class RgbToLightness(keras.layers.Layer):
    """[N, H, W, 3] sRGB in [0, 1] -> [N, H, W, 1] CIE L / 100 (computed in float32): the input
    layer of a backbone that sees only lightness, so its encoder still takes RGB images."""

    def __init__(self, **kwargs):
        kwargs.setdefault("autocast", False)  # the RGB input stays float32 under mixed precision
        super().__init__(**kwargs)

    def call(self, rgb):
        return tf.cast(rgb_to_lightness(rgb), self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], 1)


@functools.lru_cache(maxsize=None)
def _computed_ab_bins():
    # Every colour of the 8-bit RGB cube's surface: its ab projection is that of the whole cube
    # (checked on all 2^24 colours: the same 261 bins), at 2 % of the cost.
    levels = np.arange(256) / 255.0
    u, v = [g.ravel() for g in np.meshgrid(levels, levels, indexing="ij")]
    faces = [np.stack(np.roll([np.full_like(u, side), u, v], k, axis=0), -1) for side in (0.0, 1.0) for k in range(3)]
    ab = rgb_to_lab(np.concatenate(faces)).numpy()[:, 1:]
    return np.unique(np.round(ab / GRID).astype(np.int64), axis=0).astype(np.float32) * GRID


def ab_bins():
    """[Q, 2] float32: the centres (multiples of 10, sorted by a then b) of the grid-10 ab bins that
    at least one 8-bit sRGB colour falls in (nearest centre): Q = 261.

    The paper keeps "Q = 313 values which are in-gamut"; its released resources ship them as
    pts_in_hull.npy without the code that made them. Every sRGB-based rule tried here gives fewer:
    bins holding an sRGB colour 261, centres in the convex hull of the sRGB ab projection 233,
    centres in gamut at some L (L step 0.1) 229, cells touching that hull 269, centres within 10 of
    an sRGB colour 290. No bin beyond these 261 can be a pixel's nearest bin, so a target never
    lands on the other 52; the soft targets' 5 nearest bins are taken among the 261."""
    return _computed_ab_bins().copy()


def _squared_distances(ab, bins):
    """[..., Q] squared distances from every ab [..., 2] to every bin centre [Q, 2]."""
    ab = tf.cast(ab, tf.float32)
    bins = tf.constant(bins, tf.float32) if not isinstance(bins, tf.Tensor) else tf.cast(bins, tf.float32)
    return tf.reduce_sum(tf.square(ab[..., None, :] - bins), axis=-1)


def nearest_bin(ab, bins):
    """[...] int32: the index of the bin centre nearest to each ab [..., 2]."""
    return tf.argmin(_squared_distances(ab, bins), axis=-1, output_type=tf.int32)


def soft_encode(ab, bins, neighbours=NEIGHBOURS, sigma=SIGMA):
    """[..., Q] float32 targets: each ab [..., 2] spread over its `neighbours` nearest bins with
    weights exp(-d^2 / (2 sigma^2)) normalised to sum 1, 0 on every other bin."""
    distances = _squared_distances(ab, bins)
    negative, index = tf.math.top_k(-distances, k=neighbours)
    # relative to the nearest bin: the weights' ratios are unchanged, and no underflow far from the gamut
    weights = tf.exp((negative - negative[..., :1]) / (2.0 * sigma ** 2))
    weights = weights / tf.reduce_sum(weights, axis=-1, keepdims=True)
    return tf.reduce_sum(tf.one_hot(index, distances.shape[-1]) * weights[..., None], axis=-2)


def annealed_mean(probabilities, bins, temperature=TEMPERATURE):
    """[..., 2] ab: the mean of the bin centres under the distribution re-normalised at
    `temperature`, softmax(log p / T) (T = 1: the mean, T -> 0: the mode)."""
    logits = tf.math.log(tf.maximum(tf.cast(probabilities, tf.float32), 1e-12)) / temperature
    return tf.linalg.matmul(tf.nn.softmax(logits, axis=-1), tf.constant(bins, tf.float32))


def ab_targets(images, size):
    """[B, size, size, 2] ab of float images [B, H, W, 3] in [0, 1], averaged over blocks of
    H / size pixels (the reduced resolution the colorization head predicts at)."""
    ab = rgb_to_lab(images)[..., 1:]
    factor = ab.shape[1] // size
    if factor * size != ab.shape[1]:
        raise ValueError(f"ab_targets: images of {ab.shape[1]} px are not a whole multiple of the target size {size}.")
    return tf.nn.avg_pool2d(ab, factor, factor, "VALID") if factor > 1 else ab


def bin_counts(images, bins, image_size, size, batch_size=500):
    """[Q] float64: how many target pixels of uint8 images [N, H, W, 3] have each bin as their
    nearest; the images are resized to `image_size` (the training resolution) and their ab
    averaged to `size` x `size` (see `ab_targets`)."""
    counts = np.zeros(len(bins))
    for start in range(0, len(images), batch_size):
        x = tf.cast(images[start:start + batch_size], tf.float32) / 255.0
        if x.shape[1] != image_size or x.shape[2] != image_size:
            x = tf.clip_by_value(tf.image.resize(x, (image_size, image_size), antialias=True), 0.0, 1.0)
        nearest = nearest_bin(ab_targets(x, size), bins).numpy().ravel()
        counts += np.bincount(nearest, minlength=len(bins))
    return counts


def class_rebalancing_weights(counts, bins, lam=REBALANCE_LAMBDA, sigma=SIGMA):
    """[Q] float32 weights w = ((1 - lam) p~ + lam / Q)^-1 / E_p~[...], p~ the empirical bin
    distribution (counts / sum) smoothed by a Gaussian of `sigma` over the ab plane (each bin
    receives exp(-d^2 / (2 sigma^2)) of every bin's mass, then renormalised to sum 1)."""
    counts = np.asarray(counts, np.float64)
    if counts.shape != (len(bins),) or counts.sum() <= 0 or (counts < 0).any():
        raise ValueError(f"class_rebalancing_weights: counts must be {len(bins)} non-negative numbers with a "
                         f"positive sum (one per ab bin); got shape {counts.shape}, sum {counts.sum()}.")
    bins = np.asarray(bins, np.float64)
    kernel = np.exp(-((bins[:, None] - bins[None]) ** 2).sum(-1) / (2 * sigma ** 2))
    smoothed = kernel @ (counts / counts.sum())
    smoothed /= smoothed.sum()
    weights = 1.0 / ((1 - lam) * smoothed + lam / len(bins))
    return (weights / (smoothed * weights).sum()).astype(np.float32)


def cached_class_weights(images, bins, image_size, size, lam=REBALANCE_LAMBDA, sigma=SIGMA):
    """`class_rebalancing_weights` of the `bin_counts` of uint8 images [N, H, W, 3], computed once
    per data set: kept in $ZOO_CACHE_DIR/colorization under a hash of the images, bins and settings."""
    key = hashlib.sha256()
    for part in (np.ascontiguousarray(images), np.asarray(bins, np.float32), np.array([image_size, size, lam, sigma], np.float64)):
        key.update(str(part.shape).encode())
        key.update(part.tobytes())
    path = os.path.join(cache_dir("colorization"), f"class_weights_{key.hexdigest()[:24]}.npy")
    if os.path.exists(path):
        return np.load(path)
    weights = class_rebalancing_weights(bin_counts(images, bins, image_size, size), bins, lam, sigma)
    write_atomically(path, lambda f: np.save(f, weights))
    return weights
