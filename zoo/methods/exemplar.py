"""Exemplar CNN: Discriminative Unsupervised Feature Learning with Exemplar Convolutional
Neural Networks (Dosovitskiy, Springenberg, Riedmiller, Brox, NeurIPS 2014 / PAMI 2016),
parametric form: one surrogate class per seed image, a num_classes-way softmax classifier.

- Seed images: `training_subset` picks `num_classes` images of the training set at random
  (fixed seed, so a run and its resumption train on the same ones). Random rather than "the
  most textured": the paper samples seeds from random images and uses the gradient only to
  place the patch inside each image; keeping only high-gradient images would bias the surrogate
  classes towards textured categories. The trainer then trains on those images only, and the
  pipeline passes each one's index among them (0..num_classes-1) as its example id
  (`uses_example_ids = True`): that index IS the surrogate class. Ids are taken modulo
  num_classes (a graph cannot raise on a value).
- Seed patch: a square of side `patch_size` x image side where gradients are strong: Sobel
  magnitude of the grey image, box-filtered over the patch window, argmax (in-graph,
  deterministic per image, first maximum on ties).
- Transformations of the patch, each copy independently (paper, section 2, ranges in
  parentheses): translation (up to 0.2 of the patch side), scale (factor 0.7-1.4,
  log-uniform), rotation (up to 20 degrees), all in one affine warp of the whole image with
  reflected borders that also resamples the patch to `image_size`; then contrast/colour as
  `augment.color_jitter` (brightness, contrast, saturation 0.5 ~ the paper's "contrast 1/2";
  hue +-0.1 of the circle = the paper's "colour" range) and a horizontal flip.
- `copies_per_seed` transformed copies of each seed in a batch ([B, k, h, w, 3] view), all
  labelled with the seed's class; the classifier (linear, or an MLP with `hidden_dim`)
  sits on the encoder's pooled features.
"""
import dataclasses
import math

import keras
import numpy as np
import tensorflow as tf

from zoo import augment, losses
from zoo.methods.base import MethodConfig, SSLMethod
from zoo.registry import register_method


@dataclasses.dataclass
class ExemplarConfig(MethodConfig):
    num_classes: int = 8000         # surrogate classes = seed images (the paper varies 50..32000 on STL-10)
    patch_size: float = 0.75        # seed patch side as a fraction of the image side
    copies_per_seed: int = 2        # transformed copies of each seed in a batch
    translation: float = 0.2        # max shift, fraction of the patch side
    scale_range: tuple = (0.7, 1.4)
    max_rotation_deg: float = 20.0
    brightness: float = 0.4
    contrast: float = 0.5
    saturation: float = 0.5
    hue: float = 0.1
    flip: bool = True
    hidden_dim: int = 0             # 0: linear classifier; > 0: Dense-ReLU-Dense
    subset_seed: int = 0            # which images become seeds (training_subset)


@register_method("exemplar")
class ExemplarCNN(SSLMethod):
    Config = ExemplarConfig
    metric_names = ("surrogate_accuracy",)
    uses_example_ids = True

    def build_heads(self):
        c = self.config
        inputs = keras.Input((self.feature_dim,))
        x = inputs
        if c.hidden_dim:
            x = keras.layers.Dense(c.hidden_dim, activation="relu", name="exemplar_hidden")(x)
        outputs = keras.layers.Dense(c.num_classes, name="exemplar_logits")(x)
        self.classifier = keras.Model(inputs, outputs, name="exemplar_classifier")

    def training_subset(self, images):
        """Indices (sorted) of the `num_classes` seed images, drawn at random with
        `subset_seed`; None (all images) when there are no more images than classes."""
        n, k = len(images), self.config.num_classes
        if n <= k:
            return None
        return np.sort(np.random.default_rng(self.config.subset_seed).choice(n, k, replace=False))

    def make_views(self, images, labels, seed):
        c = self.config
        x = augment.to_float(images)
        size = x.shape[1]
        patch = max(2, int(round(c.patch_size * size)))
        corner = gradient_crop_location(x, patch)  # [B, 2] (y, x) of the patch's top-left pixel
        centre = tf.cast(corner, tf.float32) + (patch - 1) / 2.0
        k = c.copies_per_seed
        b = tf.shape(x)[0]
        rep = tf.repeat(x, k, axis=0)  # [B*k, H, W, 3], the copies of an image adjacent
        centre = tf.repeat(centre, k, axis=0)
        s_shift, s_scale, s_rot, s_jit, s_flip = augment.split_seed(seed, 5)
        n = b * k
        shift = tf.random.stateless_uniform([n, 2], s_shift, -c.translation, c.translation) * size  # output px
        log_lo, log_hi = math.log(c.scale_range[0]), math.log(c.scale_range[1])
        scale = tf.exp(tf.random.stateless_uniform([n], s_scale, log_lo, log_hi))
        angle = tf.random.stateless_uniform([n], s_rot, -1.0, 1.0) * math.radians(c.max_rotation_deg)
        out = patch_warp(rep, centre, scale * (size / patch), angle, shift)
        if c.image_size != size:
            out = tf.image.resize(out, [c.image_size, c.image_size], antialias=True)
        out = augment.color_jitter(out, s_jit, c.brightness, c.contrast, c.saturation, c.hue)
        if c.flip:
            out = augment.random_flip(out, s_flip)
        out = tf.clip_by_value(out, 0.0, 1.0)
        patches = tf.reshape(out, [b, k, c.image_size, c.image_size, 3])
        classes = tf.math.floormod(tf.cast(labels, tf.int32), c.num_classes)
        return {"patches": patches, "surrogate_class": classes}

    def pretext_loss(self, views, training=False):
        patches = views["patches"]
        k = self.config.copies_per_seed
        flat = tf.reshape(patches, [-1, *patches.shape[2:]])
        logits = self.classifier(self.encoder(flat, training=training), training=training)
        labels = tf.repeat(views["surrogate_class"], k)
        return losses.cross_entropy(labels, logits), {"surrogate_accuracy": losses.accuracy(labels, logits)}

    def view_panels(self, views, index):
        label = int(views["surrogate_class"][index])
        copies = np.asarray(views["patches"][index])
        return [(f"class {label} copy {j}", copy) for j, copy in enumerate(copies)]


def gradient_energy(images):
    """Sobel gradient magnitude of the grey image, [B, H, W] (reflected borders)."""
    gray = tf.tensordot(images, [0.299, 0.587, 0.114], axes=1)[..., None]
    edges = tf.image.sobel_edges(gray)[..., 0, :]  # [B, H, W, 2] (dy, dx)
    return tf.sqrt(tf.reduce_sum(tf.square(edges), axis=-1) + 1e-12)


def gradient_crop_location(images, patch):
    """Top-left (y, x) [B, 2] int32 of the patch x patch window with the largest mean Sobel
    magnitude (box filter over all windows inside the image, argmax, first on ties)."""
    energy = gradient_energy(images)[..., None]
    boxed = tf.nn.avg_pool2d(energy, patch, 1, "VALID")[..., 0]  # [B, H-p+1, W-p+1]
    w = tf.shape(boxed)[2]
    flat = tf.argmax(tf.reshape(boxed, [tf.shape(boxed)[0], -1]), axis=1, output_type=tf.int32)
    return tf.stack([flat // w, flat % w], axis=1)


def patch_warp(images, centres, zoom, angles, shifts):
    """Warp each image so that the point `centres[i]` (y, x pixels) lands at the output centre
    + shifts[i] (dx, dy output pixels), the content around it enlarged by zoom[i] and rotated by
    angles[i] radians about it; reflected borders. One `augment.affine_transform` call.

    affine_transform maps output -> input by in = A (out - c - t) + c with A = R(angle) / zoom;
    we want in = A (out - c - shift) + centre, hence t = shift + A^-1 (c - centre)."""
    h, w = images.shape[1], images.shape[2]
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    dx, dy = cx - centres[:, 1], cy - centres[:, 0]
    cos, sin = tf.cos(angles), tf.sin(angles)
    # A^-1 = zoom * R(-angle) = zoom * [[cos, sin], [-sin, cos]] on (x, y)
    tx = shifts[:, 0] + zoom * (cos * dx + sin * dy)
    ty = shifts[:, 1] + zoom * (-sin * dx + cos * dy)
    return augment.affine_transform(images, angles, zoom, tf.stack([tx, ty], axis=1), fill_mode="reflect")
