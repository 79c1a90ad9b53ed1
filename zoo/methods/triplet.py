"""Triplet loss, FaceNet (Schroff, Kalenichenko, Philbin, CVPR 2015), with the batch mining of
Hermans, Beyer, Leibe ("In Defense of the Triplet Loss", 2017).

Two augmented views of every image -> encoder -> projection head -> L2-normalised embedding
(FaceNet's 128-d unit-sphere embedding); loss max(0, d(a,p) - d(a,n) + margin) with d the
squared Euclidean distance (FaceNet; `squared=False`: Euclidean, as Hermans et al.) and
margin 0.2, the triplets mined within the GLOBAL batch (all replicas, `zoo.losses.triplet_*`):

- "semi_hard" (FaceNet; default): for every anchor-positive pair, the closest negative that is
  farther than the positive, or the farthest negative if there is none; mean over the pairs;
- "batch_hard": per anchor the farthest positive and the closest negative; mean over anchors;
- "batch_all": mean over all triplets with a positive loss.

Positives: views with the same label (labelled data, as FaceNet's identities), and always the
other view of the same image. So it also works WITHOUT labels, self-supervised: an unlabelled
image (label -1, e.g. `fit` on plain image batches) has its own other view as its only
positive and every other view of the batch as a negative; `use_labels=False` ignores the data
set's labels and trains that way on labelled data too.
"""
import dataclasses

import tensorflow as tf

from zoo import augment, losses
from zoo.heads import projection_mlp
from zoo.methods.base import MethodConfig, SSLMethod
from zoo.registry import register_method


@dataclasses.dataclass
class TripletConfig(MethodConfig):
    margin: float = 0.2                # FaceNet's alpha
    mining: str = "semi_hard"          # "semi_hard" (FaceNet), "batch_hard", "batch_all"
    squared: bool = True               # squared Euclidean distance (FaceNet)
    use_labels: bool = True            # False: positives are only the views of the same image
    projection_hidden_dim: int = 512
    projection_dim: int = 128          # FaceNet's embedding size
    crop_scale: tuple = (0.08, 1.0)    # SimCLR's views (its CIFAR settings): needed without labels
    jitter_strength: float = 0.5
    blur: bool | None = None           # None: blur only for images >= 96 px


@register_method("triplet")
class Triplet(SSLMethod):
    Config = TripletConfig
    metric_names = ("nn_accuracy", "mean_distance")

    def build_heads(self):
        c = self.config
        if c.mining not in losses.TRIPLET_MINING:
            raise ValueError(f"triplet: unknown mining {c.mining!r}; choose one of {sorted(losses.TRIPLET_MINING)}.")
        self.projector = projection_mlp(self.feature_dim, c.projection_hidden_dim, c.projection_dim,
                                        sync_bn=c.sync_bn)

    def make_views(self, images, labels, seed):
        c = self.config
        labels = tf.cast(labels, tf.int32)
        if not c.use_labels:
            labels = tf.fill(tf.shape(labels), -1)
        x = augment.to_float(images)
        seed_a, seed_b = augment.split_seed(seed, 2)
        view = lambda s: augment.simclr_view(x, c.image_size, s, crop_scale=c.crop_scale,  # noqa: E731
                                             jitter_strength=c.jitter_strength, blur=c.blur)
        return {"view_a": view(seed_a), "view_b": view(seed_b), "labels": labels}

    def embed(self, images, training=False):
        """L2-normalised embeddings of float images in [0, 1]."""
        z = self.projector(self.encoder(images, training=training), training=training)
        return tf.math.l2_normalize(tf.cast(z, tf.float32), axis=1)  # float32 also under mixed precision

    def pretext_loss(self, views, training=False):
        c = self.config
        n = tf.shape(views["view_a"])[0]
        e = self.embed(tf.concat([views["view_a"], views["view_b"]], 0), training=training)
        e = tf.stack([e[:n], e[n:]], axis=1)  # [N, 2, D]: the two views of each image
        dist, positive, negative = losses.triplet_pairs(e, views["labels"], squared=c.squared)
        loss = losses.TRIPLET_MINING[c.mining](dist, positive, negative, c.margin)
        others = tf.logical_or(positive, negative)  # every view but the anchor itself
        nearest = tf.argmin(tf.where(others, dist, float("inf")), axis=1, output_type=tf.int32)
        accuracy = tf.reduce_mean(tf.cast(tf.gather(positive, nearest[:, None], batch_dims=1), tf.float32))
        mean_distance = tf.reduce_sum(tf.where(others, dist, 0.0)) / tf.reduce_sum(tf.cast(others, tf.float32))
        return loss, {"nn_accuracy": accuracy, "mean_distance": mean_distance}
