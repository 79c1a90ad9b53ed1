"""IIC: Invariant Information Clustering for Unsupervised Image Classification and Segmentation
(Ji, Henriques, Vedaldi, ICCV 2019).

Views: the image x (a random square crop, `crop_fraction` of the side, resized back to
`image_size`) and `num_repeats` transformed copies g(x) (another such crop, horizontal flip,
colour jitter (0.4, 0.4, 0.4, 0.125)); the official code's CIFAR-10 crop is 20 of 32 px and each
image is paired with 3 transformed copies ("data repeats", paper table 2). With `sobel` both
are made grey and Sobel-filtered, as in the paper's CIFAR-10 and STL-10 runs.

Forward: encoder -> two clustering heads, each with `num_sub_heads` linear sub-heads followed by a
softmax (the official ClusterNet5gTwoHead): the main head with `num_clusters` outputs (the number
of classes) and the auxiliary over-clustering head with `num_overclusters` outputs (more than
the classes; the official code: 70 on CIFAR-10 and STL-10).

Loss (`losses.iic_loss`): for every sub-head, minus the mutual information of the cluster
assignments of x and g(x), from their joint distribution over the GLOBAL batch, symmetrised;
averaged over the sub-heads and then over the two heads. Maximising I(z, z') = H(z) - H(z|z')
makes the assignments of an image and its copy agree (low H(z|z')) while using every cluster
equally (high H(z)), which is what prevents collapse to one cluster.

What makes it work: the over-clustering head (paper table 2: the largest single effect), several
sub-heads of which the one with the lowest loss is kept (`best_sub_head`, the paper's "lowest
loss sub-head" of table 1), data repeats, Sobel input.

Metrics: the loss of each head and of each of the main head's sub-heads (`main_loss_0`, ...);
`best_sub_head` is the index of the main sub-head with the lowest mean loss so far in the epoch
(the trackers' running means), so a run's log says which sub-head to use
(`cluster_probabilities(images, sub_head)`).

Differences from the paper:
- both heads are trained on every batch with the mean of their losses; the official code
  alternates epochs of head A (over-clustering) and head B (main);
- with `sobel` the backbone's 3 input channels hold (d/dx, d/dy, 0): the paper's 2-channel Sobel
  input and a zero channel. The encoder of such a run then expects Sobel images, which
  `zoo.load` and `zoo-eval` do not make (they feed RGB), so `sobel` is off by default and in the
  CIFAR-10 recipe;
- the optimizer schedule is the zoo's (warm-up + cosine); the paper: Adam at a constant 1e-4.
"""
import dataclasses

import tensorflow as tf

from zoo import augment
from zoo.heads import linear_head
from zoo.losses.clustering import iic_loss
from zoo.methods.base import MethodConfig, SSLMethod
from zoo.registry import register_method

@dataclasses.dataclass
class IICConfig(MethodConfig):
    num_clusters: int = 10          # main head: the number of classes
    num_overclusters: int = 70      # auxiliary over-clustering head (official CIFAR-10/STL-10: 70; MNIST: 50)
    num_sub_heads: int = 5
    num_repeats: int = 3            # transformed copies per image (official: 3 on CIFAR-10, 5 on STL-10)
    crop_fraction: float = 0.625    # side of the random crops / image side (official CIFAR-10: 20 of 32 px)
    jitter: tuple = (0.4, 0.4, 0.4, 0.125)  # brightness, contrast, saturation, hue of g(x)
    sobel: bool = False             # the paper: True on CIFAR-10 and STL-10 (see the module docstring)


@register_method("iic")
class IIC(SSLMethod):
    Config = IICConfig

    @property
    def metric_names(self):
        return ("main_loss", "overcluster_loss",
                *(f"main_loss_{i}" for i in range(self.config.num_sub_heads)))

    def build_heads(self):
        c = self.config
        for name, value in (("num_clusters", c.num_clusters), ("num_overclusters", c.num_overclusters),
                            ("num_sub_heads", c.num_sub_heads), ("num_repeats", c.num_repeats)):
            if value < 1:
                raise ValueError(f"iic: {name}={value}; must be at least 1.")
        if not 0.0 < c.crop_fraction <= 1.0:
            raise ValueError(f"iic: crop_fraction={c.crop_fraction}; must be in (0, 1] (the crop side / image side).")
        self.unit_range_views = not c.sobel  # Sobel gradients lie in [-4, 4]
        # All sub-heads of a head as one Dense layer, split into [B, sub-heads, clusters].
        self.main_head = linear_head(self.feature_dim, c.num_sub_heads * c.num_clusters, name="main_head")
        self.overcluster_head = linear_head(self.feature_dim, c.num_sub_heads * c.num_overclusters,
                                            name="overcluster_head")

    # --- views ----------------------------------------------------------------------------
    def _crop(self, images, seed):
        area = self.config.crop_fraction ** 2  # a square crop of that side, anywhere in the image
        return augment.random_resized_crop(images, self.config.image_size, seed, scale=(area, area), ratio=(1.0, 1.0))

    def make_views(self, images, labels, seed):
        c = self.config
        x = augment.to_float(images)
        s_image, s_copies = augment.split_seed(seed, 2)
        image = self._crop(x, s_image)
        copies = []
        for s in augment.split_seed(s_copies, c.num_repeats):
            s_crop, s_flip, s_jitter = augment.split_seed(s, 3)
            copy = augment.random_flip(self._crop(x, s_crop), s_flip)
            copies.append(augment.color_jitter(copy, s_jitter, *c.jitter))
        if c.sobel:
            image, copies = augment.sobel(image), [augment.sobel(copy) for copy in copies]
        return {"image": image, "transformed": tf.stack(copies, axis=1)}  # [B, h, w, 3], [B, R, h, w, 3]

    # --- forward --------------------------------------------------------------------------
    def _assignments(self, head, features, num_clusters):
        """Soft cluster assignments [N, sub-heads, clusters] of every sub-head of `head`."""
        logits = head(features)
        if logits.dtype in (tf.float16, tf.bfloat16):  # mixed precision: the softmax and loss in float32
            logits = tf.cast(logits, tf.float32)
        return tf.nn.softmax(tf.reshape(logits, [-1, self.config.num_sub_heads, num_clusters]), axis=-1)

    def cluster_probabilities(self, images, sub_head=None, head="main", training=False):
        """P(cluster | image) of float images in [0, 1] (Sobel-filtered ones for a `sobel` model):
        [B, sub-heads, k], or [B, k] for one `sub_head` (e.g. the run's `best_sub_head`)."""
        heads = {"main": (self.main_head, self.config.num_clusters),
                 "overcluster": (self.overcluster_head, self.config.num_overclusters)}
        if head not in heads:
            raise ValueError(f"iic: head={head!r}; choose 'main' or 'overcluster'.")
        layer, num_clusters = heads[head]
        p = self._assignments(layer, self.encoder(images, training=training), num_clusters)
        return p if sub_head is None else p[:, sub_head]

    def pretext_loss(self, views, training=False):
        c = self.config
        copies = views["transformed"]
        repeats = copies.shape[1]
        # x through the encoder once: repeating a sample R times leaves the batch-norm statistics
        # unchanged, so this equals the official code's R stacked copies of x.
        features_x = self.encoder(views["image"], training=training)
        features_gx = self.encoder(tf.reshape(copies, [-1, *copies.shape[2:]]), training=training)  # row b*R + r
        features_x = tf.repeat(features_x, repeats, axis=0)  # pairs each x with its R copies
        metrics, head_losses = {}, []
        for name, head, k in (("main", self.main_head, c.num_clusters),
                              ("overcluster", self.overcluster_head, c.num_overclusters)):
            p_x = self._assignments(head, features_x, k)
            p_gx = self._assignments(head, features_gx, k)
            sub_head_losses = [iic_loss(p_x[:, i], p_gx[:, i]) for i in range(c.num_sub_heads)]
            head_loss = tf.add_n(sub_head_losses) / c.num_sub_heads
            metrics[f"{name}_loss"] = head_loss
            head_losses.append(head_loss)
            if name == "main":
                metrics.update({f"main_loss_{i}": loss for i, loss in enumerate(sub_head_losses)})
        return (head_losses[0] + head_losses[1]) / 2.0, metrics

    def _update_metrics(self, loss, metrics):
        # best_sub_head is derived from the trackers' running means, not tracked itself: a mean of
        # per-batch argmins over the epoch would not be an index.
        results = super()._update_metrics(loss, metrics)
        means = tf.stack([tf.reshape(results[f"main_loss_{i}"], []) for i in range(self.config.num_sub_heads)])
        best = tf.cast(tf.argmin(means), tf.float32)
        results["best_sub_head"] = tf.reshape(best, tf.shape(results["loss"]))
        return results
