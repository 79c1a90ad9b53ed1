"""RotNet: Unsupervised Representation Learning by Predicting Image Rotations
(Gidaris, Singh, Komodakis, ICLR 2018).

Every image appears in the batch rotated by each angle of the rotation set; a K-way classifier
on the encoder's features predicts the rotation. The K copies of an image are adjacent in the
batch, so a per-replica split of the batch never separates them (batch-norm statistics of a
replica then cannot reveal the rotation).

Rotation sets (the paper's CIFAR-10 table, section 3.2): `num_rotations` 4 (0/90/180/270, the
paper's best), 8 (every 45 degrees), 2 (0/180); `rotations` names any other set in degrees,
e.g. (90, 270). Multiples of 90 degrees are exact pixel permutations. A 45-degree rotation
leaves empty corners that would give the answer away, so when the set has one, EVERY copy
(0 degrees included) is zoomed by sqrt(2) about the centre: the output is the largest square
inside the rotated image, no fill is visible, and no copy differs from another in scale or
interpolation blur ("crop"; "reflect" and "zeros" fill the corners instead, for ablations).
The official code has only the 4-rotation set, so this corner handling is ours.

Features of an intermediate block (the paper's best CIFAR-10 numbers are on block 2) are
measured by `zoo-eval RUN --layer stage2`, for any method (MODEL_CARDS.md "Per-block probes").
"""
import dataclasses
import math

import tensorflow as tf

from zoo import augment, losses
from zoo.heads import linear_head
from zoo.methods.base import MethodConfig, SSLMethod
from zoo.registry import register_method


@dataclasses.dataclass
class RotationConfig(MethodConfig):
    num_rotations: int = 4          # 2: 0/180, 4: 0/90/180/270 (the paper's best), 8: every 45 degrees
    rotations: tuple | None = None   # explicit angles in degrees, e.g. (90, 270); overrides num_rotations
    corners: str = "crop"           # for 45-degree sets: "crop" (zoom all copies by sqrt 2), "reflect", "zeros"
    rotations_per_image: int | None = None  # None: every rotation of every image in the batch; m: m
    #   distinct rotations drawn per image and step (8 rotations at the cost of 4: equal budget)
    crop_padding: int | None = None  # standard CIFAR crop: pad image_size // 8, crop back
    flip: bool = True


@register_method("rotation")
class RotNet(SSLMethod):
    Config = RotationConfig
    metric_names = ("rotation_accuracy",)

    def build_heads(self):
        self.angles = rotation_angles(self.config)
        self.classifier = linear_head(self.feature_dim, len(self.angles), name="rotation_head")

    def make_views(self, images, labels, seed):
        c = self.config
        x = augment.to_float(images)
        s_crop, s_flip, s_pick = augment.split_seed(seed, 3)
        padding = c.crop_padding if c.crop_padding is not None else max(1, c.image_size // 8)
        x = augment.random_crop_with_padding(x, s_crop, padding)
        if c.flip:
            x = augment.random_flip(x, s_flip)
        if c.rotations_per_image:
            return sampled_rotation_batch(x, self.angles, c.rotations_per_image, s_pick, c.corners)
        return rotation_batch(x, self.angles, self.config.corners)

    def view_panels(self, views, index):
        k = self.config.rotations_per_image or len(self.angles)
        labels = views["rotation"].numpy()[index * k:(index + 1) * k]
        return [(f"{self.angles[label]} deg, label {label}", views["images"][index * k + j].numpy())
                for j, label in enumerate(labels)]

    def pretext_loss(self, views, training=False):
        logits = self.classifier(self.encoder(views["images"], training=training), training=training)
        labels = views["rotation"]
        return losses.cross_entropy(labels, logits), {"rotation_accuracy": losses.accuracy(labels, logits)}


_STANDARD_SETS = {2: (0, 180), 4: (0, 90, 180, 270), 8: tuple(range(0, 360, 45))}
_CORNERS = {"crop": "reflect", "reflect": "reflect", "zeros": "constant"}


def rotation_angles(config):
    """The rotation set in degrees, checked."""
    if config.rotations is not None:
        angles = tuple(int(a) % 360 for a in config.rotations)
    elif config.num_rotations in _STANDARD_SETS:
        angles = _STANDARD_SETS[config.num_rotations]
    else:
        raise ValueError(f"num_rotations={config.num_rotations}: choose 2, 4 or 8, or list the angles "
                         "in degrees with rotations=[...], e.g. --set method_config.rotations=[90,270].")
    if len(set(angles)) != len(angles) or len(angles) < 2 or any(a % 45 for a in angles):
        raise ValueError(f"rotations={list(angles)}: need 2 or more distinct multiples of 45 degrees.")
    if config.rotations_per_image is not None and not 1 <= config.rotations_per_image <= len(angles):
        raise ValueError(f"rotations_per_image={config.rotations_per_image}: must be between 1 and the "
                         f"{len(angles)} rotations of the set (or null for all).")
    if config.corners not in _CORNERS:
        raise ValueError(f"corners={config.corners!r}: choose one of {sorted(_CORNERS)}.")
    return angles


def _flatten_copies(copies, labels):
    """[B, K, H, W, C] copies and [B, K] labels -> rows Ki..Ki+K-1 for image i."""
    shape = tf.shape(copies)
    flat = tf.reshape(copies, tf.concat([[shape[0] * shape[1]], shape[2:]], 0))
    return {"images": flat, "rotation": tf.reshape(labels, [-1])}


def sampled_rotation_batch(images, angles, per_image, seed, corners="crop"):
    """Like rotation_batch, but each image gets `per_image` distinct rotations of the set,
    drawn at random: [B, H, W, C] -> {"images": [mB, ...], "rotation": [mB] (indices into angles)}."""
    b = tf.shape(images)[0]
    noise = tf.random.stateless_uniform([b, len(angles)], seed)
    picks = tf.argsort(noise, axis=1)[:, :per_image]  # a random subset per image, in random order
    degrees = tf.gather(tf.constant(angles, tf.float32), picks)
    zoom = math.sqrt(2.0) if corners == "crop" and any(a % 90 for a in angles) else 1.0
    copies = [augment.affine_transform(images, degrees[:, j] * (math.pi / 180.0), tf.fill([b], zoom),
                                       fill_mode=_CORNERS[corners]) for j in range(per_image)]
    return _flatten_copies(tf.stack(copies, axis=1), tf.cast(picks, tf.int32))


def rotation_batch(images, angles=(0, 90, 180, 270), corners="crop"):
    """[B, H, W, C] -> {"images": [KB, H, W, C], "rotation": [KB]}, where rows Ki..Ki+K-1 are
    image i rotated counter-clockwise by angles[0..K-1] degrees and "rotation" is the index."""
    if all(a % 90 == 0 for a in angles):
        copies = [augment.rotate(images, a // 90) for a in angles]
    else:
        b = tf.shape(images)[0]
        zoom = tf.fill([b], math.sqrt(2.0) if corners == "crop" else 1.0)
        copies = [augment.affine_transform(images, tf.fill([b], math.radians(a)), zoom,
                                           fill_mode=_CORNERS[corners]) for a in angles]
    labels = tf.tile(tf.range(len(angles), dtype=tf.int32)[None], [tf.shape(images)[0], 1])
    return _flatten_copies(tf.stack(copies, axis=1), labels)
