"""Relative patch location (context prediction): Unsupervised Visual Representation Learning by
Context Prediction (Doersch, Gupta, Efros, ICCV 2015).

A 3x3 grid of patches is laid over the image; the centre patch and one of its 8 neighbours go
through the same encoder (siamese, shared weights: one `self.encoder` call on both), their
features are concatenated and an MLP classifies the neighbour's position. Shortcuts are
blocked as in the paper: a gap between patches, a random jitter of every patch, and a defence
against chromatic aberration ("drop": keep one random colour channel and replace the other two
by low-amplitude noise; "gray": project colours off the green-magenta axis; "none"), plus, with
`resample_min_scale` < 1, resampling every patch so that JPEG block edges do not show where it
was cut.

Labels (`zoo.patches.NEIGHBOURS`): row-major over the 3x3 grid skipping the centre,
0 top-left, 1 top, 2 top-right, 3 left, 4 right, 5 bottom-left, 6 bottom, 7 bottom-right.

Patches are cut at image_size (a 32 px CIFAR image gives 7 px patches) unless `cut_size` asks
for the image to be resized (e.g. upsampled 2x) first; the encoder keeps image_size's stem.
"""
import dataclasses

import numpy as np
import tensorflow as tf

from zoo import augment, losses, patches
from zoo.heads import encode_stack, siamese_classifier
from zoo.methods.base import MethodConfig, SSLMethod
from zoo.registry import register_method


@dataclasses.dataclass
class RelativePatchConfig(MethodConfig):
    # Geometry as fractions of image_size (rounded to pixels). The paper: 96 px patches, a 48 px
    # gap (half a patch), jitter up to 7 px, in images of 150K-450K pixels. A 32 px image cannot
    # hold those ratios with room to move the grid; 0.22 / 0.1 / 0.03 give 7 px patches, 3 px
    # gaps, +-1 px jitter (>= 1 px between patches) and 4 grid positions per axis at 32 px, and
    # 49 / 22 / 7 px at 224 px.
    patch_fraction: float = 0.22
    gap_fraction: float = 0.1
    jitter_fraction: float = 0.03
    # Side (px) the image is resized to before patches are cut, the fractions apply to it; None:
    # image_size. 64 upsamples 32 px images 2x (14 px patches instead of 7) at ~4x the compute.
    cut_size: int | None = None
    chromatic: str = "drop"          # "drop" (the paper's colour dropping), "gray" (projection), "none"
    drop_noise: float = 0.01         # noise std of dropped channels / kept channel's std (paper ~1/100)
    flip: bool = True                # random horizontal flip of the image before cutting (label follows)
    # < 1: every patch is resampled (bilinear) from a random sub-box of U(resample_min_scale, 1)
    # of its box (zoo.patches.cut_patches). A defence against a shortcut the papers' defences
    # do not cover: in JPEG images the 8x8 block edges fall at fixed offsets, so with exact
    # pixels the network can tell a neighbour's direction from where the edges fall in each
    # patch (design note 22; whole-pixel jitter keeps the offsets readable).
    resample_min_scale: float = 1.0
    # Head: a shared per-patch layer (the paper's siamese fc6, 4096 units on AlexNet conv5) and a
    # layer on the concatenation (fc7, 4096). A ResNet's pooled features already play fc6's
    # role, so the defaults are smaller; 0 removes a layer.
    branch_dim: int = 512
    hidden_dim: int = 512


@register_method("relative_patch")
class RelativePatch(SSLMethod):
    Config = RelativePatchConfig
    metric_names = ("position_accuracy",)

    def build_heads(self):
        c = self.config
        if c.chromatic not in patches.CHROMATIC_MODES:
            raise ValueError(f"relative_patch: chromatic={c.chromatic!r}; choose one of {patches.CHROMATIC_MODES}.")
        patches.check_min_scale(c.resample_min_scale, "relative_patch: resample_min_scale")
        self.cut_size = c.cut_size or c.image_size
        self.geometry = patches.pair_geometry(self.cut_size, c.patch_fraction, c.gap_fraction, c.jitter_fraction)
        if self.geometry.patch > c.image_size:
            raise ValueError(f"relative_patch: {self.geometry.patch} px patches exceed image_size {c.image_size}.")
        self.classifier = siamese_classifier(self.feature_dim, 2, c.branch_dim, c.hidden_dim, 8,
                                             sync_bn=c.sync_bn, name="position_head")

    def make_views(self, images, labels, seed):
        """{"patches": [B, 2, p, p, 3] (centre, neighbour) in [0, 1], "position": [B] int32}."""
        c = self.config
        s_flip, s_grid, s_chroma = augment.split_seed(seed, 3)
        x = patches.resize_to(augment.to_float(images), self.cut_size)
        if c.flip:
            x = augment.random_flip(x, s_flip)
        s_grid, s_resample = augment.split_seed(s_grid, 2) if c.resample_min_scale < 1 else (s_grid, None)
        corners, position = patches.sample_pair_corners(tf.shape(x)[0], self.geometry, s_grid)
        pair = patches.cut_patches(x, corners, self.geometry.patch, c.resample_min_scale, s_resample)
        pair = patches.chromatic_defence(pair, c.chromatic, s_chroma, c.drop_noise)
        return {"patches": pair, "position": position}

    def pretext_loss(self, views, training=False):
        features = encode_stack(self.encoder, views["patches"], training)
        logits = self.classifier(features, training=training)
        labels = views["position"]
        return losses.cross_entropy(labels, logits), {"position_accuracy": losses.accuracy(labels, logits)}

    def view_panels(self, views, index):
        """The centre patch, the neighbour, and both placed on the 3x3 grid at their positions."""
        pair = np.clip(np.asarray(views["patches"][index], np.float32), 0.0, 1.0)
        label = int(np.asarray(views["position"][index]))
        name = patches.NEIGHBOUR_NAMES[label]
        layout = patches.assemble_grid(pair, [(1, 1), patches.NEIGHBOURS[label]], pair.shape[1])
        return [("centre", pair[0]), (f"neighbour: {name}", pair[1]), (f"label {label}", layout)]
