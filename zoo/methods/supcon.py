"""Supervised contrastive learning, SupCon (Khosla, Teterwak, Wang, Sarna, Tian, Isola, Maschinot,
Liu, Krishnan, NeurIPS 2020).

SimCLR's two views of every image -> encoder -> projection head -> L2-normalised z, but every
view with the anchor's LABEL is a positive (several positives per anchor), every other view
of the GLOBAL batch (all replicas) a negative; the paper's L_out loss (eq. 2): the mean over
positives of the log-probabilities, outside the log (`zoo.losses.supcon_loss`). This method is
the contrastive stage; the paper's second stage, a linear classifier on the frozen encoder, is
the evaluation suite's linear probe (`zoo-eval`).

Labels: SupCon needs class labels (a labelled data set: cifar10-jpeg, or folder:PATH with one
sub-folder per class; or `fit` on (images, labels) batches). Unlabelled images have label -1.
By default they are an error: at trace time when the labels are known then (`fit` on plain
image batches), otherwise a run-time assertion on the first batch that has one (in the tf.data
pipeline; XLA-compiled steps skip assertions). With `allow_unlabelled=True` an unlabelled
image's only positive is its own other view, so on wholly unlabelled data SupCon is exactly
SimCLR's NT-Xent (with SupCon's temperature and augmentation); the `positives_per_anchor`
metric (1.0 then) shows how much label information a run actually uses.
"""
import dataclasses

import numpy as np
import tensorflow as tf

from zoo import augment, losses
from zoo.heads import projection_mlp
from zoo.methods.base import MethodConfig, SSLMethod
from zoo.registry import register_method


@dataclasses.dataclass
class SupConConfig(MethodConfig):
    # 0.1: the paper's value (its section 4 finds 0.1 best), also the authors' CIFAR runs
    # (SupContrast code: --temp 0.1 at batch 1024); kept at our CIFAR batch of 256, where each
    # anchor still has ~50 same-class positives among the 511 other views.
    temperature: float = 0.1
    projection_hidden_dim: int = 512  # the paper: 2048 (ResNet-50's feature size)
    projection_dim: int = 128
    # SimCLR's views (its CIFAR settings), so that SupCon and SimCLR differ only in the positives.
    # The authors' CIFAR code crops with scale (0.2, 1) and the same jitter (ColorJitter(0.4, 0.4,
    # 0.4, 0.1) with p=0.8 = strength 0.5, grayscale p=0.2); their ImageNet runs use AutoAugment.
    crop_scale: tuple = (0.08, 1.0)
    jitter_strength: float = 0.5
    blur: bool | None = None           # None: blur only for images >= 96 px (SimCLR's rule)
    allow_unlabelled: bool = False     # True: label -1 -> positives are the image's own views only


@register_method("supcon")
class SupCon(SSLMethod):
    Config = SupConConfig
    metric_names = ("contrastive_accuracy", "positives_per_anchor")

    def build_heads(self):
        c = self.config
        self.projector = projection_mlp(self.feature_dim, c.projection_hidden_dim, c.projection_dim,
                                        sync_bn=c.sync_bn)

    def _check_labels(self, labels):
        if self.config.allow_unlabelled:
            return labels
        message = ("supcon needs class labels, but got unlabelled images (label -1). Train on a labelled "
                   "data set (cifar10-jpeg:..., folder:PATH with one sub-folder per class) or give fit "
                   "(images, labels) batches; or set allow_unlabelled=True, which makes each unlabelled image's "
                   "own other view its only positive (SimCLR's loss).")
        static = tf.get_static_value(labels)
        if static is not None and np.any(np.asarray(static) < 0):
            raise ValueError(message)
        with tf.control_dependencies([tf.debugging.assert_non_negative(labels, message=message)]):
            return tf.identity(labels)

    def make_views(self, images, labels, seed):
        c = self.config
        labels = self._check_labels(tf.cast(labels, tf.int32))
        x = augment.to_float(images)
        seed_a, seed_b = augment.split_seed(seed, 2)
        view = lambda s: augment.simclr_view(x, c.image_size, s, crop_scale=c.crop_scale,  # noqa: E731
                                             jitter_strength=c.jitter_strength, blur=c.blur)
        return {"view_a": view(seed_a), "view_b": view(seed_b), "labels": labels}

    def pretext_loss(self, views, training=False):
        n = tf.shape(views["view_a"])[0]
        # One pass over both views: one BN batch of 2N, as SimCLR.
        h = self.encoder(tf.concat([views["view_a"], views["view_b"]], 0), training=training)
        z = self.projector(h, training=training)
        z = tf.stack([z[:n], z[n:]], axis=1)  # [N, 2, D]: the two views of each image
        logits, positive = losses.supcon_logits(z, views["labels"], self.config.temperature)
        loss = losses.supcon_loss_from_logits(logits, positive)
        nearest = tf.argmax(logits, axis=1, output_type=tf.int32)  # the anchor itself is masked out
        accuracy = tf.reduce_mean(tf.cast(tf.gather(positive, nearest[:, None], batch_dims=1), tf.float32))
        positives = tf.reduce_mean(tf.reduce_sum(tf.cast(positive, tf.float32), axis=1))
        return loss, {"contrastive_accuracy": accuracy, "positives_per_anchor": positives}
