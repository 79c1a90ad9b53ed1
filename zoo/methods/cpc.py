"""CPC: Representation Learning with Contrastive Predictive Coding (van den Oord, Li, Vinyals 2018)
and CPC v2: Data-Efficient Image Recognition with Contrastive Predictive Coding (Henaff et al. 2019).

The image is cut into a G x G grid of overlapping patches (CPC on ImageNet: 64 px patches with a
32 px stride in a 256 px crop, 7 x 7; here the geometry is a fraction of `image_size`, so a 32 px
CIFAR image gives 8 px patches with a 4 px stride, again 7 x 7). Every patch goes through the
encoder on its own (`self.encoder`, ending in global mean pooling; one batched call on all B*G*G
patches) to a vector z[row, col]. A masked context network (a PixelCNN-style stack of residual
blocks whose spatial convolutions are causal over rows: zero-padded above, none below) turns the
grid into contexts c[row, col] that depend on rows <= row only. A linear map W_k per step
k = 1..K predicts z[t + k, col] from c[t, col], and InfoNCE classifies the true patch against
negatives:

- negatives="position" (default): the G*G - 1 other patches of the same image and the patch at
  the target position in each of the other B_g - 1 images of the GLOBAL batch (embeddings
  gathered across replicas), i.e. G*G + B_g - 1 candidates per prediction; linear in the batch;
- negatives="all": every patch of every image of the global batch (B_g * G * G candidates, as in
  the v2 reference code); quadratic in the batch (GPU-sized batches only).

The logits are the dot products <W_k c, z> times `logit_scale`, by default 1 / sqrt(D) (as the
PyTorch Lightning Bolts CPC v2 does); the paper's unscaled products (logit_scale 1) diverged
here within 14 SGD steps at lr 0.1 (the encoder's pooled features are unbounded). The loss is
the mean over directions, steps k, positions and images of the cross-entropy.

CPC v2 options (`norm`, `directions`, patch augmentation):
- norm="layer" (default, v2): layer normalisation per grid position in the context network,
  which is exactly causal (batch norm in training mode mixes the statistics of the whole batch,
  future rows included, into every position: norm="batch" is the v1-style option). The
  backbone keeps its batch norm: it is shared with every other method and is what is exported;
  in training mode its statistics pool all B*G*G patches of the batch, a leak of O(1 / (B G G))
  through the batch mean and variance that v2 removed by putting layer norm into the encoder;
- directions: "down" (v1: rows above predict rows below), "up" (bottom-up, by flipping the grid
  vertically), "right" and "left" (by transposing it); one context network and predictor per
  direction;
- patch augmentation (v2): per-patch horizontal flip, colour jitter and greyscale.

Evaluation note: the paper's linear evaluation pools the grid of patch features; the zoo's
evaluation encodes the whole image, which the encoder (trained on 8 px patches at CIFAR size)
sees at a larger scale than in training.
"""
import dataclasses

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from zoo import augment, losses, patches
from zoo.heads import encode_stack
from zoo.methods.base import MethodConfig, SSLMethod
from zoo.registry import register_method

DIRECTIONS = ("down", "up", "right", "left")
NORMS = ("layer", "batch", "none")


@dataclasses.dataclass
class CPCConfig(MethodConfig):
    # Geometry as fractions of image_size: 0.25 / 0.125 are the paper's 64 px patches with a
    # 32 px stride in 256 px (7 x 7), and 8 px / 4 px in a 32 px image (7 x 7).
    patch_fraction: float = 0.25
    stride_fraction: float = 0.125
    steps: int = 3                   # K: predict 1..K rows ahead (v1 on ImageNet: up to 5 of 7)
    directions: tuple = ("down", "up")  # any of DIRECTIONS; v1 ("down",), v2 all four
    context_dim: int | None = None   # channels of the context network (None: the encoder's width)
    context_blocks: int = 3          # residual blocks; each sees kernel - 1 more rows above, kernel // 2 more cols
    context_kernel: int = 3          # causal kernel: rows t - kernel + 1 .. t, cols +- kernel // 2
    norm: str = "layer"              # context network: "layer" (v2), "batch" (v1), "none"
    negatives: str = "position"      # "position" or "all" (see the module docstring)
    logit_scale: float | None = None  # logits = scale * <W_k c, z>; None: 1 / sqrt(D) (see the docstring)
    # Image augmentation before cutting the grid.
    flip: bool = True
    crop_padding: int | None = None  # CIFAR-style random crop (reflect-pad, crop back); None: size // 8
    # Patch augmentation (v2), independently per patch.
    patch_flip_p: float = 0.5
    patch_jitter_p: float = 0.8
    patch_jitter_strength: float = 0.5   # SimCLR-style strength s: (0.8s, 0.8s, 0.8s, 0.2s)
    patch_grayscale_p: float = 0.25


def augment_patches(stack, seed, flip_p=0.5, jitter_p=0.8, jitter_strength=0.5, grayscale_p=0.25):
    """Independent per-patch flip, colour jitter and greyscale of stack [B, K, p, p, 3]."""
    shape = tf.shape(stack)
    x = tf.reshape(stack, tf.concat([[-1], shape[2:]], 0))
    n = tf.shape(x)[0]
    s_flip, s_jit, s_jp, s_gray = augment.split_seed(seed, 4)
    pick = lambda p, s: tf.random.stateless_uniform([n], s) < p  # noqa: E731
    if flip_p > 0:
        x = augment.random_flip(x, s_flip, flip_p)
    if jitter_p > 0 and jitter_strength > 0:
        s = jitter_strength
        jittered = augment.color_jitter(x, s_jit, 0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s)
        x = tf.where(pick(jitter_p, s_jp)[:, None, None, None], jittered, x)
    if grayscale_p > 0:
        x = tf.where(pick(grayscale_p, s_gray)[:, None, None, None], augment.grayscale(x), x)
    return tf.reshape(x, shape)


def to_frame(grid, direction):
    """[B, G, G, ...] in image orientation -> the frame where `direction` predicts downwards."""
    perm = [0, 2, 1] + list(range(3, grid.shape.rank))
    if direction == "down":
        return grid
    if direction == "up":
        return tf.reverse(grid, [1])
    if direction == "right":
        return tf.transpose(grid, perm)
    if direction == "left":
        return tf.reverse(tf.transpose(grid, perm), [1])
    raise ValueError(f"Unknown CPC direction {direction!r}; choose from {DIRECTIONS}.")


def from_frame(grid, direction):
    """Inverse of `to_frame`."""
    perm = [0, 2, 1] + list(range(3, grid.shape.rank))
    if direction == "left":
        return tf.transpose(tf.reverse(grid, [1]), perm)
    return to_frame(grid, direction)  # the others are involutions


def _norm(kind, sync_bn, name):
    if kind == "layer":
        return layers.LayerNormalization(axis=-1, epsilon=1e-5, name=name)  # per grid position
    if kind == "batch":
        return layers.BatchNormalization(momentum=0.9, epsilon=1e-5, synchronized=sync_bn, name=name)
    return layers.Identity(name=name)


def context_network(grid, input_dim, context_dim, blocks=3, kernel=3, norm="layer", sync_bn=False,
                    name="context"):
    """Masked (PixelCNN-style) context network: [B, G, G, input_dim] -> [B, G, G, context_dim].

    A 1x1 input projection, `blocks` pre-activation residual bottleneck blocks (norm, ReLU, 1x1
    conv to context_dim // 2; norm, ReLU, causal kernel x kernel conv; norm, ReLU, 1x1 conv back)
    and a final norm. The causal conv is zero-padded by kernel - 1 rows ABOVE and none below, so
    output row t reads input rows t - kernel + 1 .. t: by induction every output at row t depends
    on input rows <= t only (exactly, with norm "layer"/"none" or batch norm in inference mode),
    and row t sees blocks * (kernel - 1) rows above and blocks * (kernel // 2) columns to each side
    (3 blocks of 3 on a 7 x 7 grid: every row above, columns col - 3 .. col + 3)."""
    if kernel < 2 or kernel % 2 == 0:
        raise ValueError(f"cpc: context_kernel={kernel}; need an odd kernel >= 3.")
    inputs = keras.Input((grid, grid, input_dim))
    x = layers.Conv2D(context_dim, 1, name=f"{name}_in")(inputs)
    hidden = max(1, context_dim // 2)
    for i in range(blocks):
        p = f"{name}_block{i + 1}"
        h = layers.ReLU()(_norm(norm, sync_bn, f"{p}_norm1")(x))
        h = layers.Conv2D(hidden, 1, name=f"{p}_reduce")(h)
        h = layers.ReLU()(_norm(norm, sync_bn, f"{p}_norm2")(h))
        h = layers.ZeroPadding2D(((kernel - 1, 0), (kernel // 2, kernel // 2)), name=f"{p}_causal_pad")(h)
        h = layers.Conv2D(hidden, kernel, padding="valid", name=f"{p}_causal_conv")(h)
        h = layers.ReLU()(_norm(norm, sync_bn, f"{p}_norm3")(h))
        h = layers.Conv2D(context_dim, 1, name=f"{p}_expand")(h)
        x = layers.Add(name=f"{p}_add")([x, h])
    x = _norm(norm, sync_bn, f"{name}_out_norm")(x)
    return keras.Model(inputs, x, name=name)


def predictor(grid, context_dim, feature_dim, steps, name="predictor"):
    """The K linear maps W_1..W_K as one Dense: [B, G, G, C] -> [B, G, G, K, D]."""
    inputs = keras.Input((grid, grid, context_dim))
    x = layers.Dense(steps * feature_dim, use_bias=False, name=f"{name}_dense")(inputs)
    return keras.Model(inputs, layers.Reshape((grid, grid, steps, feature_dim))(x), name=name)


@register_method("cpc")
class CPC(SSLMethod):
    Config = CPCConfig
    metric_names = ("cpc_accuracy",)

    def build_heads(self):
        c = self.config
        self.geometry = patches.patch_grid_geometry(c.image_size, c.patch_fraction, c.stride_fraction)
        g = self.geometry.grid
        self.directions = tuple(c.directions)
        bad = [d for d in self.directions if d not in DIRECTIONS]
        if bad or not self.directions or len(set(self.directions)) != len(self.directions):
            raise ValueError(f"cpc: directions={list(c.directions)}; choose distinct ones from {DIRECTIONS}.")
        if c.norm not in NORMS:
            raise ValueError(f"cpc: norm={c.norm!r}; choose one of {NORMS}.")
        if c.negatives not in losses.CPC_NEGATIVES:
            raise ValueError(f"cpc: negatives={c.negatives!r}; choose one of {losses.CPC_NEGATIVES}.")
        if not 1 <= c.steps < g:
            raise ValueError(f"cpc: steps={c.steps} on a {g} x {g} grid; need 1 <= steps < {g}.")
        context_dim = c.context_dim or self.feature_dim
        self.context_nets = {d: context_network(g, self.feature_dim, context_dim, c.context_blocks, c.context_kernel,
                                                c.norm, c.sync_bn, name=f"context_{d}") for d in self.directions}
        self.predictors = {d: predictor(g, context_dim, self.feature_dim, c.steps, name=f"predictor_{d}")
                           for d in self.directions}

    def make_views(self, images, labels, seed):
        """{"patches": [B, G*G, p, p, 3] in [0, 1], row-major over the grid}."""
        c = self.config
        s_flip, s_crop, s_patch = augment.split_seed(seed, 3)
        x = patches.resize_to(augment.to_float(images), c.image_size)
        if c.flip:
            x = augment.random_flip(x, s_flip)
        padding = c.crop_padding if c.crop_padding is not None else c.image_size // 8
        if padding:
            x = augment.random_crop_with_padding(x, s_crop, padding)
        stack = patches.cut_patch_grid(x, self.geometry)
        stack = augment_patches(stack, s_patch, c.patch_flip_p, c.patch_jitter_p, c.patch_jitter_strength,
                                c.patch_grayscale_p)
        return {"patches": tf.clip_by_value(stack, 0.0, 1.0)}

    def encode_grid(self, stack, training=False):
        """Patch embeddings z [B, G, G, D] of patches [B, G*G, p, p, 3] (one encoder call)."""
        g = self.geometry.grid
        z = encode_stack(self.encoder, stack, training)
        return tf.reshape(z, [-1, g, g, z.shape[-1]])

    def context(self, z, direction, training=False):
        """The contexts [B, G, G, C] of `direction`, in image orientation: for "down" the context at
        row t depends on rows <= t of z only, for "up" on rows >= t, "right" cols <= t, "left" >= t."""
        return from_frame(self.context_nets[direction](to_frame(z, direction), training=training), direction)

    def pretext_loss(self, views, training=False):
        c = self.config
        g = self.geometry.grid
        z = tf.cast(self.encode_grid(views["patches"], training), tf.float32)
        z_all, offset = losses.gather_across_replicas(z)
        scale = c.logit_scale if c.logit_scale is not None else z.shape[-1] ** -0.5
        total, correct = [], []
        for d in self.directions:
            zf, zf_all = to_frame(z, d), to_frame(z_all, d)
            pred = tf.cast(self.predictors[d](self.context_nets[d](zf, training=training), training=training),
                           tf.float32) * scale  # [B, G, G, K, D]
            for k in range(1, c.steps + 1):
                logits, labels = losses.cpc_logits(pred[:, :g - k, :, k - 1], zf, zf_all, k, offset, c.negatives)
                total.append(losses.cross_entropy(labels, logits))
                correct.append(losses.accuracy(labels, logits))
        return tf.add_n(total) / len(total), {"cpc_accuracy": tf.add_n(correct) / len(correct)}

    def view_panels(self, views, index):
        """The patch grid of one image (patches apart by 1 px) and the patches pasted back at their
        places (overlaps: later patches on top), i.e. what the encoder sees after augmentation."""
        geo, g = self.geometry, self.geometry.grid
        stack = np.clip(np.asarray(views["patches"][index], np.float32), 0.0, 1.0)
        p, gap = geo.patch, 1
        side = g * p + (g - 1) * gap
        canvas = np.full((side, side, 3), 1.0, np.float32)
        pasted = np.zeros((geo.span, geo.span, 3), np.float32)
        for i, patch in enumerate(stack):
            r, col = divmod(i, g)
            canvas[r * (p + gap):r * (p + gap) + p, col * (p + gap):col * (p + gap) + p] = patch
            pasted[r * geo.stride:r * geo.stride + p, col * geo.stride:col * geo.stride + p] = patch
        return [(f"{g}x{g} of {p}px, stride {geo.stride}", canvas), ("patches pasted back", pasted)]
