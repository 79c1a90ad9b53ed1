"""Context Encoders: Feature Learning by Inpainting (Pathak, Krähenbühl, Donahue, Darrell, Efros,
CVPR 2016).

A region of every image is removed (filled with the data mean, which the backbone's own
normalisation maps to 0); the encoder sees the rest, and a decoder predicts the missing pixels.
Masks (`mask`), as in the paper's section 3.3:

- "center": a central square (`center_fraction` of the side; the paper's 1/4 of the area);
- "blocks": random squares of `block_fraction` of the side, possibly overlapping, added one by
  one until they cover `mask_fraction` of the image (the count that comes closest);
- "region" (default, the paper's best features): random shapes. The paper cut them from PASCAL
  VOC segmentations; its released code (train_random.lua) thresholds a smooth random field,
  which needs no data set, and so does this: uniform noise on a `region_grid` x `region_grid`
  grid, bilinearly up-sampled, and the `mask_fraction` of pixels with the lowest values removed
  (exactly that many, per image; the code's pattern has ~8 cells per image side).

Encoder -> decoder, as the paper's section 3.1: the backbone's last map (stage4, 4 x 4 at 32 px)
goes through a channel-wise fully connected layer (`ChannelwiseDense`: each channel fully
connected over its own h*w positions, so every decoder unit can see the whole image without the
parameters of a full FC layer; channels do not mix there) and then a 1x1 convolution that mixes
the channels; an up-sampling decoder (`zoo.heads.upsampling_decoder`) predicts the image.

Loss: L2 on the removed region, and on an `overlap_fraction` border of context around it that the
decoder also predicts (the paper predicts "a slightly larger patch that overlaps with the context";
its code: a 4 px border at 128 px, i.e. 1/32 of the side; 1 px at 32 px), weighted per pixel by
`inside_weight` inside the removed region and `border_weight` on the border. The paper's joint loss
weighs L2 by lambda_rec = 0.999 and the adversarial term by lambda_adv = 0.001, and its code puts 10x
the L2 weight on the overlap border (train.lua: wtl2 = 0.999, overlapL2Weight = 10): the defaults
0.999 and 9.99. (Not 0.001 on the border: 0.001 is the adversarial weight.) Each image's weighted sum
of squared errors (mean over the 3 channels) is divided by its number of predicted pixels (the
Torch code's MSECriterion over the predicted patch), then averaged over the batch.

Left out: the adversarial term. It sharpens the inpainting; the released feature model was trained
with the reconstruction loss alone (the code's README: "Features for context encoder trained with
reconstruction loss"), and a GAN needs a second optimiser and its own train step.

Train-eval gap: masks exist only in training. The exported encoder is the backbone on whole,
unmasked images (pooled stage4 features for kNN and the linear probe, `zoo-eval --layer stageN`
for the per-block probes); the channel-wise FC layer and the decoder are heads, dropped at export.
"""
import dataclasses

import keras
import tensorflow as tf
from keras import layers

from zoo import augment, patches
from zoo.backbones import feature_maps
from zoo.heads import map_shapes, upsampling_decoder
from zoo.methods.base import MethodConfig, SSLMethod
from zoo.registry import register_method

MASKS = ("center", "blocks", "region")


@dataclasses.dataclass
class ContextEncoderConfig(MethodConfig):
    mask: str = "region"            # "center", "blocks" or "region" (random shapes, the paper's best features)
    mask_fraction: float = 0.25     # blocks / region: fraction of the pixels removed (the paper: up to 1/4)
    center_fraction: float = 0.5    # center: side of the removed square over the image side (1/4 of the area)
    block_fraction: float = 0.25    # blocks: side of each block over the image side
    region_grid: int = 8            # region: cells of the random field per image side (blob size ~ side / grid)
    overlap_fraction: float = 0.03125  # predicted border of context around the removed region (4 px at 128 px)
    inside_weight: float = 0.999    # L2 weight inside the removed region (the paper's lambda_rec)
    border_weight: float = 9.99     # L2 weight on the overlap border (10 x lambda_rec, the paper's code)
    decoder_channels: int | None = None  # channels of the 1x1 mixing conv and the first up-sampling; None: the map's
    crop_padding: int | None = None  # CIFAR-style random crop (reflect-pad, crop back); None: size // 8; 0: off
    flip: bool = True


class ChannelwiseDense(layers.Layer):
    """[B, h, w, C] -> [B, h, w, C]: every channel c fully connected over its own h*w positions,
    out[b, q, c] = sum_p x[b, p, c] * kernel[c, p, q] + bias[c, q] (positions p, q flattened):
    information moves across the whole map but never between channels (the paper's channel-wise
    fully connected layer; a 1x1 convolution after it mixes the channels)."""

    def build(self, input_shape):
        h, w, c = input_shape[1:]
        if h is None or w is None:
            raise ValueError("ChannelwiseDense needs a map of known size; build the model with a fixed image size.")
        self.kernel = self.add_weight(name="kernel", shape=(c, h * w, h * w), initializer="glorot_uniform")
        self.bias = self.add_weight(name="bias", shape=(c, h * w), initializer="zeros")

    def call(self, x):
        shape = tf.shape(x)
        flat = tf.reshape(x, [shape[0], -1, x.shape[-1]])  # [B, P, C]
        out = tf.einsum("bpc,cpq->bqc", flat, tf.cast(self.kernel, x.dtype))
        out = out + tf.transpose(tf.cast(self.bias, x.dtype))[None]
        return tf.reshape(out, shape)


def context_decoder(map_shape, image_size, channels, sync_bn=False, name="context_decoder"):
    """Encoder map [h, w, C] -> channel-wise FC -> 1x1 conv (`channels`) -> BN -> ReLU -> the
    up-sampling decoder -> images [image_size, image_size, 3] in [0, 1]."""
    inputs = keras.Input(tuple(map_shape))
    x = ChannelwiseDense(name=f"{name}_channelwise_fc")(inputs)
    x = layers.Dense(channels, use_bias=False, name=f"{name}_mix")(x)  # the 1x1 convolution
    x = layers.ReLU()(layers.BatchNormalization(momentum=0.9, epsilon=1e-5, synchronized=sync_bn,
                                                name=f"{name}_mix_bn")(x))
    x = upsampling_decoder(x.shape[1:], image_size, channels, sync_bn=sync_bn, name=f"{name}_up")(x)
    return keras.Model(inputs, x, name=name)


# ---- masks: float32 [B, S, S], 1 on the removed pixels ------------------------------------

def center_mask(batch, size, side):
    """The same central square of `side` px for every image (top-left at (size - side) // 2)."""
    start = (size - side) // 2
    inside = tf.logical_and(tf.range(size) >= start, tf.range(size) < start + side)
    square = tf.cast(tf.logical_and(inside[:, None], inside[None, :]), tf.float32)
    return tf.tile(square[None], [batch, 1, 1])


def block_mask(batch, size, block, fraction, seed):
    """Random `block` px squares placed uniformly, added one at a time; each image keeps the
    first k of them, k chosen per image so that their union covers the closest to `fraction` of
    its pixels (so within half a block's area of it, unless all the candidates together cover less:
    twice the fraction's worth of blocks are drawn)."""
    candidates = int(2 * fraction * size * size / (block * block)) + 2
    s_top, s_left = augment.split_seed(seed, 2)
    tops = tf.random.stateless_uniform([batch, candidates], s_top, 0, size - block + 1, tf.int32)
    lefts = tf.random.stateless_uniform([batch, candidates], s_left, 0, size - block + 1, tf.int32)
    pixels = tf.range(size)

    def square(k):
        rows = tf.logical_and(pixels[None] >= tops[:, k:k + 1], pixels[None] < tops[:, k:k + 1] + block)
        cols = tf.logical_and(pixels[None] >= lefts[:, k:k + 1], pixels[None] < lefts[:, k:k + 1] + block)
        return tf.cast(tf.logical_and(rows[:, :, None], cols[:, None, :]), tf.float32)

    union, errors = tf.zeros([batch, size, size]), []
    for k in range(candidates):
        union = tf.maximum(union, square(k))
        errors.append(tf.abs(tf.reduce_mean(union, axis=[1, 2]) - fraction))
    keep = tf.argmin(tf.stack(errors, axis=1), axis=1, output_type=tf.int32)  # index of the last block kept
    mask = tf.zeros([batch, size, size])
    for k in range(candidates):
        mask = tf.maximum(mask, square(k) * tf.cast(k <= keep, tf.float32)[:, None, None])
    return mask


def region_mask(batch, size, fraction, grid, seed):
    """Random shapes: uniform noise on a grid x grid field, bilinearly up-sampled to size x size;
    the round(fraction * size^2) pixels of lowest value are removed (ties broken by position)."""
    noise = tf.random.stateless_uniform([batch, grid, grid, 1], seed)
    field = tf.reshape(tf.image.resize(noise, [size, size], "bilinear"), [batch, size * size])
    count = max(1, patches.pixels(fraction, size * size))
    ranks = tf.argsort(tf.argsort(field, axis=1, stable=True), axis=1, stable=True)
    return tf.reshape(tf.cast(ranks < count, tf.float32), [batch, size, size])


def overlap_border(mask, overlap):
    """The context pixels within `overlap` px (Chebyshev distance) of the removed region."""
    if overlap <= 0:
        return tf.zeros_like(mask)
    grown = tf.nn.max_pool2d(mask[..., None], 2 * overlap + 1, 1, "SAME")[..., 0]
    return grown - mask


def region_weights(mask, overlap, inside_weight, border_weight):
    """Per-pixel L2 weights [B, S, S]: inside_weight on the removed region, border_weight on its
    overlap border, 0 elsewhere."""
    return inside_weight * mask + border_weight * overlap_border(mask, overlap)


def weighted_l2(predicted, target, weights):
    """Batch mean of each image's sum_p weights_p * mean_c (predicted - target)^2 over its
    predicted pixels (weights > 0), divided by their number; in float32."""
    squared = tf.reduce_mean(tf.square(tf.cast(predicted, tf.float32) - tf.cast(target, tf.float32)), axis=-1)
    weights = tf.cast(weights, tf.float32)
    count = tf.reduce_sum(tf.cast(weights > 0, tf.float32), axis=[1, 2])
    return tf.reduce_mean(tf.reduce_sum(weights * squared, axis=[1, 2]) / tf.maximum(count, 1.0))


@register_method("context_encoder")
class ContextEncoder(SSLMethod):
    Config = ContextEncoderConfig

    def build_heads(self):
        c = self.config
        if c.mask not in MASKS:
            raise ValueError(f"context_encoder: mask={c.mask!r}; choose one of {MASKS}.")
        for name in ("mask_fraction", "center_fraction", "block_fraction"):
            if not 0 < getattr(c, name) < 1:
                raise ValueError(f"context_encoder: {name}={getattr(c, name)} must be between 0 and 1 (exclusive).")
        if c.region_grid < 1 or c.overlap_fraction < 0 or c.inside_weight <= 0 or c.border_weight < 0:
            raise ValueError(f"context_encoder: need region_grid >= 1, overlap_fraction >= 0, inside_weight > 0 and "
                             f"border_weight >= 0; got {c.region_grid}, {c.overlap_fraction}, {c.inside_weight}, "
                             f"{c.border_weight}.")
        self.overlap = patches.pixels(c.overlap_fraction, c.image_size)
        self.feature_map = feature_maps(self.encoder, ["stage4"])
        map_shape = map_shapes(self.feature_map, c.image_size)[0]
        self.decoder = context_decoder(map_shape, c.image_size, c.decoder_channels or map_shape[-1],
                                       sync_bn=c.sync_bn)

    def masks(self, batch, seed):
        """Removed-region masks [B, S, S] (1 = removed) of the configured kind."""
        c, size = self.config, self.config.image_size
        if c.mask == "center":
            return center_mask(batch, size, max(1, patches.pixels(c.center_fraction, size)))
        if c.mask == "blocks":
            return block_mask(batch, size, max(1, patches.pixels(c.block_fraction, size)), c.mask_fraction, seed)
        return region_mask(batch, size, c.mask_fraction, c.region_grid, seed)

    def make_views(self, images, labels, seed):
        """{"images": the crop [B, S, S, 3] in [0, 1] (the target), "context": it with the removed
        region filled with the data mean (the encoder's input), "mask": [B, S, S], 1 = removed}."""
        c = self.config
        s_augment, s_mask = augment.split_seed(seed, 2)
        x = patches.resize_to(augment.to_float(images), c.image_size)
        x = augment.crop_and_flip(x, s_augment, c.crop_padding, c.flip)
        mask = self.masks(tf.shape(x)[0], s_mask)
        fill = tf.constant(c.mean, tf.float32)
        context = x * (1.0 - mask[..., None]) + fill * mask[..., None]
        return {"images": x, "context": context, "mask": mask}

    def decode(self, context, training=False):
        """The decoder's image [B, S, S, 3] in [0, 1] from the context images."""
        maps = self.feature_map(context, training=training)
        return self.decoder(maps[0] if isinstance(maps, (list, tuple)) else maps, training=training)

    def inpaint(self, views):
        """The context with the removed region replaced by the decoder's pixels (for pictures)."""
        predicted = tf.cast(self.decode(views["context"]), tf.float32)
        mask = views["mask"][..., None]
        return views["context"] * (1.0 - mask) + predicted * mask

    def pretext_loss(self, views, training=False):
        c = self.config
        predicted = self.decode(views["context"], training=training)
        weights = region_weights(views["mask"], self.overlap, c.inside_weight, c.border_weight)
        return weighted_l2(predicted, views["images"], weights), {}

    def view_panels(self, views, index):
        import numpy as np
        mask = np.asarray(views["mask"][index])
        border = np.asarray(overlap_border(views["mask"][index:index + 1], self.overlap)[0])
        image = np.asarray(views["images"][index])
        # what the loss sees: the target inside the region, tinted red on the border, grey elsewhere
        tinted = 0.5 * image + np.array([0.5, 0.0, 0.0], np.float32)
        region = np.where(mask[..., None] > 0, image, np.where(border[..., None] > 0, tinted, 0.5))
        return [(f"input: {self.config.mask}, {mask.mean():.0%} removed", np.asarray(views["context"][index])),
                (f"target: removed region + {self.overlap} px border (red)", region)]
