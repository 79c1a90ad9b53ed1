"""RotNet: Unsupervised Representation Learning by Predicting Image Rotations
(Gidaris, Singh, Komodakis, ICLR 2018).

Every image appears in the batch rotated by 0, 90, 180 and 270 degrees; a 4-way classifier on
the encoder's features predicts the rotation. The four copies of an image are adjacent in
the batch, so a per-replica split of the batch never separates them (batch-norm statistics
of a replica then cannot reveal the rotation).
"""
import dataclasses

import tensorflow as tf

from zoo import augment, losses
from zoo.heads import linear_classifier
from zoo.methods.base import MethodConfig, SSLMethod
from zoo.registry import register_method


@dataclasses.dataclass
class RotationConfig(MethodConfig):
    num_rotations: int = 4          # 0/90/180/270 degrees (the paper's best on CIFAR-10)
    crop_padding: int | None = None  # standard CIFAR crop: pad image_size // 8, crop back
    flip: bool = True


@register_method("rotation")
class RotNet(SSLMethod):
    Config = RotationConfig
    metric_names = ("rotation_accuracy",)

    def build_heads(self):
        if self.config.num_rotations != 4:
            raise ValueError(f"num_rotations={self.config.num_rotations}: only 4 (multiples of 90 degrees) "
                             "is implemented so far.")
        self.classifier = linear_classifier(self.feature_dim, self.config.num_rotations, name="rotation_head")

    def make_views(self, images, labels, seed):
        c = self.config
        x = augment.to_float(images)
        s_crop, s_flip = augment.split_seed(seed, 2)
        padding = c.crop_padding if c.crop_padding is not None else max(1, c.image_size // 8)
        x = augment.random_crop_with_padding(x, s_crop, padding)
        if c.flip:
            x = augment.random_flip(x, s_flip)
        return rotation_batch(x)

    def pretext_loss(self, views, training=False):
        logits = self.classifier(self.encoder(views["images"], training=training), training=training)
        labels = views["rotation"]
        return losses.cross_entropy(labels, logits), {"rotation_accuracy": losses.accuracy(labels, logits)}


def rotation_batch(images):
    """[B, H, W, C] -> {"images": [4B, H, W, C], "rotation": [4B]}, where rows 4i..4i+3 are
    image i rotated by 0, 90, 180, 270 degrees counter-clockwise and "rotation" is k."""
    rotated = tf.stack([augment.rotate(images, k) for k in range(4)], axis=1)  # [B, 4, H, W, C]
    shape = tf.shape(rotated)
    flat = tf.reshape(rotated, tf.concat([[shape[0] * 4], shape[2:]], 0))
    labels = tf.tile(tf.range(4, dtype=tf.int32), [shape[0]])
    return {"images": flat, "rotation": labels}
