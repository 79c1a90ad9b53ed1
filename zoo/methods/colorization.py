"""Colorful Image Colorization (Zhang, Isola, Efros, ECCV 2016), as a self-supervised method.

The encoder sees only the lightness L of an image and predicts, for every pixel of a reduced
resolution, a distribution over the quantised ab colour bins (zoo.color):

- Input: the backbone is built with one input channel (a one-value `mean` / `std`, of L / 100;
  the paper centres L at 50, so mean 0.5; std 0.25 puts L / 100 on roughly unit scale). Its first
  layer, `rgb_to_lightness`, converts RGB in [0, 1] to L / 100, so views, the exported encoder and
  `zoo.load` all take RGB images, as every other encoder of the zoo.
- Head: the backbone's last map (stage4, 4 x 4 at 32 px) up-sampled by (4x4 transposed
  convolution, stride 2, BN, ReLU) doublings to `image_size / output_stride` (8 x 8 at 32 px; the
  paper: 224 -> 56, a stride of 4) and a 1x1 convolution to one logit per ab bin. Why the last map
  and not a middle one: the exported encoder's features are the pooled stage4 map, so the pretext
  task must train every stage; the paper's network also predicts from its last layer, whose
  resolution it keeps with dilated convolutions (the ResNet has none, hence the up-sampling).
- Targets: the image's ab averaged over `output_stride` x `output_stride` blocks, soft-encoded
  over the 5 nearest bins (Gaussian, sigma 5).
- Loss: the paper's class-rebalanced cross-entropy, -sum_q Z_q log softmax(logits)_q times the
  weight w of the pixel's nearest bin (q* = argmax_q Z_q), averaged over pixels and images.
  w = ((1 - lambda) p~ + lambda / Q)^-1, E_p~[w] = 1, p~ the Gaussian-smoothed (sigma 5) bin
  distribution of the training set's target pixels, lambda = 0.5.

Where the rebalancing weights come from: `on_epoch_start(epoch, images)` (zoo-train calls it
before every epoch; pass `method.epoch_start_callback(train_images)` to your own `fit`) computes
them once per data set with zoo.color.cached_class_weights (cached under $ZOO_CACHE_DIR/colorization),
and keeps them in the non-trainable variable `class_weights`, so checkpoints hold them and a
resumed run does not recompute. Until then (a `fit` without that callback) every weight is 1:
plain soft cross-entropy.

Bins: the 261 grid-10 ab bins that sRGB colours fall in, not the paper's 313 (see zoo.color.ab_bins).
Decoding for pictures: the annealed mean (T = 0.38) of the predicted distribution, with the image's
own L. The head is dropped at export; the encoder is evaluated on RGB images (converted to L inside).
"""
import dataclasses

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from zoo import augment, color, patches
from zoo.backbones import feature_maps
from zoo.heads import map_shapes, upsample_by_doublings
from zoo.methods.base import MethodConfig, SSLMethod
from zoo.registry import register_method


@dataclasses.dataclass
class ColorizationConfig(MethodConfig):
    mean: tuple = (0.5,)            # of L / 100: one value, so the backbone sees one channel (lightness)
    std: tuple = (0.25,)
    output_stride: int = 4          # the head predicts at image_size / output_stride (the paper: 224 -> 56)
    head_channels: int | None = None  # channels of the first up-sampling layer; None: the map's
    neighbours: int = 5             # soft-encoding: nearest bins each target is spread over
    sigma: float = 5.0              # soft-encoding and prior smoothing: Gaussian sigma in ab units
    rebalance_lambda: float = 0.5   # weight of the uniform distribution in the rebalancing mix
    temperature: float = 0.38       # annealed-mean decoding (pictures only)
    crop_padding: int | None = None  # CIFAR-style random crop (reflect-pad, crop back); None: size // 8; 0: off
    flip: bool = True


def colorization_head(map_shape, target_size, channels, num_bins, sync_bn=False, name="colorization_head"):
    """Map [h, w, C] -> logits [target_size, target_size, num_bins]: (4x4 transposed convolution,
    stride 2 -> BN -> ReLU) once per doubling from h to target_size (channels halving, at least
    8), then a 1x1 convolution. target_size / h must be a power of 2 (1: no up-sampling)."""
    h = map_shape[0]
    factor = target_size // h if h else 0
    if factor < 1 or factor * h != target_size or factor & (factor - 1):
        raise ValueError(f"colorization: cannot up-sample the {h} x {h} stage4 map to the {target_size} x "
                         f"{target_size} targets by doublings; choose image_size and output_stride so that "
                         "image_size / output_stride is the map size times a power of 2 (e.g. 32 px, stride 4).")
    inputs = keras.Input(tuple(map_shape))
    x = upsample_by_doublings(inputs, factor, channels, sync_bn, name)
    return keras.Model(inputs, layers.Conv2D(num_bins, 1, name=f"{name}_logits")(x), name=name)


def rebalanced_cross_entropy(logits, targets, class_weights):
    """Mean over pixels and images of -w[argmax_q Z] * sum_q Z_q log softmax(logits)_q, for
    logits and soft targets Z [B, h, w, Q] and class weights w [Q]; in float32."""
    log_probabilities = tf.nn.log_softmax(tf.cast(logits, tf.float32), axis=-1)
    targets = tf.cast(targets, tf.float32)
    pixel_weights = tf.gather(tf.cast(class_weights, tf.float32), tf.argmax(targets, axis=-1))
    return tf.reduce_mean(-tf.reduce_sum(targets * log_probabilities, axis=-1) * pixel_weights)


@register_method("colorization")
class Colorization(SSLMethod):
    Config = ColorizationConfig
    metric_names = ("bin_accuracy",)

    def build_heads(self):
        c = self.config
        if len(c.mean) != 1 or len(c.std) != 1:
            raise ValueError(f"colorization: the encoder sees only lightness, so mean and std take one value each "
                             f"(of L / 100); got mean={tuple(c.mean)}, std={tuple(c.std)}. Use e.g. mean=(0.5,), "
                             "std=(0.25,).")
        if c.output_stride < 1 or c.image_size % c.output_stride:
            raise ValueError(f"colorization: output_stride={c.output_stride} must be >= 1 and divide image_size="
                             f"{c.image_size}.")
        if not 0 <= c.rebalance_lambda <= 1 or c.sigma <= 0 or c.temperature <= 0 or c.neighbours < 1:
            raise ValueError(f"colorization: need 0 <= rebalance_lambda <= 1, sigma > 0, temperature > 0 and "
                             f"neighbours >= 1; got {c.rebalance_lambda}, {c.sigma}, {c.temperature}, {c.neighbours}.")
        self.bins = color.ab_bins()
        self.target_size = c.image_size // c.output_stride
        self.feature_map = feature_maps(self.encoder, ["stage4"])
        map_shape = map_shapes(self.feature_map, c.image_size)[0]
        self.head = colorization_head(map_shape, self.target_size, c.head_channels or map_shape[-1], len(self.bins),
                                      sync_bn=c.sync_bn)
        state = dict(trainable=False, autocast=False, aggregation="only_first_replica")
        # 1 until on_epoch_start computes them from the training set (then class_weights_computed = 1)
        self.class_weights = self.add_weight(name="class_weights", shape=(len(self.bins),), dtype="float32",
                                             initializer="ones", **state)
        self.class_weights_computed = self.add_weight(name="class_weights_computed", shape=(), dtype="int32",
                                                      initializer="zeros", **state)

    def on_epoch_start(self, epoch, images=None, labels=None):
        """Set `class_weights` from the training images (uint8 [N, H, W, 3]) once: skipped when they
        are already computed (this run's first epoch, or restored from a checkpoint)."""
        if images is None or int(self.class_weights_computed.numpy()):
            return
        c = self.config
        weights = color.cached_class_weights(images, self.bins, c.image_size, self.target_size,
                                             c.rebalance_lambda, c.sigma)
        self.class_weights.assign(weights)
        self.class_weights_computed.assign(1)

    def make_views(self, images, labels, seed):
        """{"images": the crop [B, S, S, 3] in [0, 1]: the encoder takes its L, the loss its ab}."""
        c = self.config
        x = patches.resize_to(augment.to_float(images), c.image_size)
        return {"images": augment.crop_and_flip(x, seed, c.crop_padding, c.flip)}

    def logits(self, images, training=False):
        """[B, s, s, Q] bin logits (s = image_size / output_stride) of RGB images in [0, 1]."""
        maps = self.feature_map(images, training=training)
        return self.head(maps[0] if isinstance(maps, (list, tuple)) else maps, training=training)

    def pretext_loss(self, views, training=False):
        c = self.config
        ab = color.ab_targets(views["images"], self.target_size)
        targets = color.soft_encode(ab, self.bins, c.neighbours, c.sigma)
        logits = self.logits(views["images"], training=training)
        loss = rebalanced_cross_entropy(logits, targets, self.class_weights)
        correct = tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32), color.nearest_bin(ab, self.bins))
        return loss, {"bin_accuracy": tf.reduce_mean(tf.cast(correct, tf.float32))}

    def colorize(self, images):
        """[B, S, S, 3] RGB in [0, 1]: each image's own L with the annealed mean of the predicted ab
        (up-sampled bilinearly from the head's resolution)."""
        probabilities = tf.nn.softmax(tf.cast(self.logits(images), tf.float32), axis=-1)
        ab = color.annealed_mean(probabilities, self.bins, self.config.temperature)
        ab = tf.image.resize(ab, tf.shape(images)[1:3], "bilinear")
        return color.lab_to_rgb(tf.concat([color.rgb_to_lab(images)[..., :1], ab], axis=-1))

    def view_panels(self, views, index):
        """The input L, the true ab (drawn at L = 50), the true ab at the head's resolution with the
        image's L (what the targets encode) and, once trained (class weights computed), the
        annealed-mean colourisation."""
        image = views["images"][index:index + 1]
        lab = color.rgb_to_lab(image)
        lightness, ab = lab[..., :1], lab[..., 1:]
        size = image.shape[1:3]
        coarse = tf.image.resize(color.ab_targets(image, self.target_size), size, "nearest")
        panels = [("input: lightness L", color.lab_to_rgb(tf.concat([lightness, tf.zeros_like(ab)], -1))[0]),
                  ("true ab at L = 50", color.lab_to_rgb(tf.concat([tf.fill(tf.shape(lightness), 50.0), ab], -1))[0]),
                  (f"target: ab at {self.target_size}x{self.target_size} with the image's L",
                   color.lab_to_rgb(tf.concat([lightness, coarse], -1))[0])]
        if int(self.class_weights_computed.numpy()):
            panels.append((f"predicted: annealed mean, T = {self.config.temperature:g}", self.colorize(image)[0]))
        return [(caption, np.asarray(panel)) for caption, panel in panels]
