"""Counting: Representation Learning by Learning to Count (Noroozi, Pirsiavash, Favaro, ICCV 2017).

A network phi maps an image to a vector of non-negative "counts" of visual primitives. The
primitives of an image are those of its four tiles, and scaling an image does not change them,
so the counts of the 2x-downsampled image D(x) must equal the sum of the counts of its tiles
T_1(x)..T_4(x) (all five at the same resolution: a 32 px image gives a 16 px D(x) and four
16 px tiles). A contrastive term with another image y rules out the trivial phi = 0:
    l(x, y) = |phi(D x) - sum_j phi(T_j x)|^2 + max(0, M - |phi(D y) - sum_j phi(T_j x)|^2)
(`zoo.losses.counting_loss`; M = 10 and 1000 counts in the paper).

phi = self.encoder followed by a head ending in a ReLU (the paper: AlexNet whose last layer
has 1000 outputs and a ReLU). All 5B inputs of a batch go through phi together. The final ReLU
is smoothed by default to s * softplus(x / s), s = `relu_smoothness` = 0.05 (at most 0.035 above
the ReLU, same sign and slope away from 0): with a hard ReLU the gradient jumps when a count's
pre-activation crosses 0, and a rounding-level difference (e.g. synchronised batch norm on 2
replicas vs 1 device) then flips a count's gradient on or off (measured: one flip among 40k
counts changed the head's gradient by 1%), so distributed and single-device steps would not
agree. `relu_smoothness: 0` gives the paper's hard ReLU.

y: image i is paired with image i XOR 1 of the same batch (0<->1, 2<->3, ...;
`zoo.patches.pair_partner`), so the pairs stay inside every even-sized per-replica shard and the
loss on N replicas equals the loss on one device. (With an odd local batch the last image is
paired with the one before it.)

Views: the augmented image (random resized crop, flip, colour jitter; the paper's random
crops, flips and colour) gives the "counting" view [B, 5, h/2, w/2, 3]: index 0 is D(x),
1..4 the tiles in row-major order (top-left, top-right, bottom-left, bottom-right). D(x) is
made with a downsampling filter picked at random per image (bilinear, bicubic, area, Lanczos;
the paper varies the downsampling method so that resampling artefacts cannot tell D(x) from a
tile). Note the encoder trains on half-resolution inputs; it is evaluated on whole images.
"""
import dataclasses

import keras
import numpy as np
import tensorflow as tf

from zoo import augment, losses, patches
from zoo.methods.base import MethodConfig, SSLMethod
from zoo.registry import register_method

_RESIZE = ("bilinear", "bicubic", "area", "lanczos3")


@dataclasses.dataclass
class CountingConfig(MethodConfig):
    count_dim: int = 1000           # number of counted primitives (the paper's 1000)
    margin: float = 10.0            # M (the paper's 10)
    hidden_dim: int = 0             # 0: Dense(count_dim) + ReLU on the features; > 0: one more Dense-ReLU before it
    relu_smoothness: float = 0.05   # final ReLU as s * softplus(x / s); 0: the paper's hard ReLU (see below)
    crop_scale: tuple = (0.5, 1.0)
    flip: bool = True
    jitter: float = 0.4             # brightness, contrast, saturation; hue = jitter / 4
    grayscale_p: float = 0.0
    downsample_methods: tuple = _RESIZE


@register_method("counting")
class Counting(SSLMethod):
    Config = CountingConfig
    metric_names = ("tile_error", "contrast_distance")

    def build_heads(self):
        c = self.config
        bad = sorted(set(c.downsample_methods) - set(_RESIZE))
        if bad or not c.downsample_methods:
            raise ValueError(f"downsample_methods={list(c.downsample_methods)}: choose from {list(_RESIZE)}.")
        inputs = keras.Input((self.feature_dim,))
        x = inputs
        if c.hidden_dim:
            x = keras.layers.Dense(c.hidden_dim, activation="relu", name="counting_hidden")(x)
        x = keras.layers.Dense(c.count_dim, name="counting_counts")(x)
        s = float(c.relu_smoothness)
        outputs = keras.layers.Activation(
            (lambda t: s * keras.activations.softplus(t / s)) if s > 0 else "relu", name="counting_relu")(x)
        self.counter = keras.Model(inputs, outputs, name="counting_head")

    def make_views(self, images, labels, seed):
        c = self.config
        x = augment.to_float(images)
        s_crop, s_flip, s_jit, s_gray, s_down = augment.split_seed(seed, 5)
        b = tf.shape(x)[0]
        x = augment.random_resized_crop(x, c.image_size, s_crop, scale=tuple(c.crop_scale))
        if c.flip:
            x = augment.random_flip(x, s_flip)
        if c.jitter:
            x = augment.color_jitter(x, s_jit, c.jitter, c.jitter, c.jitter, c.jitter / 4)
        if c.grayscale_p:
            gray = tf.random.stateless_uniform([b], s_gray) < c.grayscale_p
            x = tf.where(gray[:, None, None, None], augment.grayscale(x), x)
        return {"counting": counting_views(x, s_down, c.downsample_methods)}

    def phi(self, images, training=False):
        return self.counter(self.encoder(images, training=training), training=training)

    def pretext_loss(self, views, training=False):
        v = views["counting"]  # [B, 5, h, w, 3]
        b = tf.shape(v)[0]
        counts = self.phi(tf.reshape(v, [-1, *v.shape[2:]]), training=training)
        counts = tf.reshape(tf.cast(counts, tf.float32), [b, 5, self.config.count_dim])
        down, tiles = counts[:, 0], counts[:, 1:]
        down_y = tf.gather(down, patches.pair_partner(b))
        loss = losses.counting_loss(down, tiles, down_y, self.config.margin)
        total = tf.reduce_sum(tiles, axis=1)
        return loss, {"tile_error": tf.reduce_mean(tf.reduce_sum(tf.square(down - total), -1)),
                      "contrast_distance": tf.reduce_mean(tf.reduce_sum(tf.square(down_y - total), -1))}

    def view_panels(self, views, index):
        v = np.asarray(views["counting"][index])
        partner = int(patches.pair_partner(len(views["counting"]))[index])
        names = ["D(x)", "tile 1 top-left", "tile 2 top-right", "tile 3 bottom-left", "tile 4 bottom-right"]
        return [(f"{names[0]}, y = image {partner}", v[0])] + [(n, t) for n, t in zip(names[1:], v[1:])]


def counting_views(images, seed, methods=_RESIZE):
    """[B, H, W, 3] -> [B, 5, H/2, W/2, 3]: D(x) (downsampled by a filter from `methods`
    drawn per image), then the four tiles in row-major order."""
    h, w = images.shape[1], images.shape[2]
    th, tw = h // 2, w // 2
    tiles = [images[:, i * th:(i + 1) * th, j * tw:(j + 1) * tw] for i in range(2) for j in range(2)]
    downs = [tf.image.resize(images, [th, tw], method=m, antialias=True) for m in methods]
    if len(downs) == 1:
        down = downs[0]
    else:
        pick = tf.random.stateless_uniform([tf.shape(images)[0]], seed, 0, len(downs), tf.int32)
        down = tf.einsum("mbhwc,bm->bhwc", tf.stack(downs), tf.one_hot(pick, len(downs), dtype=images.dtype))
    down = tf.clip_by_value(down, 0.0, 1.0)  # bicubic / Lanczos overshoot
    return tf.stack([down, *tiles], axis=1)
