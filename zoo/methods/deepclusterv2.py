"""DeepCluster v2 (Caron, Misra, Mairal, Goyal, Bojanowski, Joulin, NeurIPS 2020, the SwAV paper's
variant of DeepCluster, its appendix and `main_deepclusterv2.py`).

Views: two SimCLR-style crops of every image (`augment.simclr_view_pair`), and each image's index
in the training array (`uses_example_ids`): the pseudo-labels are looked up by it.

Forward: encoder -> projector (Linear -> BN -> ReLU -> Linear) -> z, L2-normalised -> scores
z.c_k / T against each of several prototype sets (3 sets of 3000 on ImageNet), whose rows are the
unit-norm centroids of the last k-means (non-trainable: they are set, not learned).

Loss: cross-entropy of softmax(scores / T) of each crop against the image's cluster in that set,
averaged over the crops and the sets (T = 0.1).

Between epochs (`on_epoch_start`, on the host): k-means (scikit-learn, `init="random"` as the
official code's random-sample initialisation, `kmeans_iterations` Lloyd steps) on the memory bank
of projections, one bank per crop, set j clustering the bank of crop j mod 2 (as the official
code); the centroids, L2-normalised, become the prototypes and every image's cluster is the
argmax of its bank row against them (the same scores the loss uses). The banks hold each image's
last projection (`MemoryBank` with momentum 0), written after every step. Before the first epoch
the banks are filled by a forward pass over the training images (the official code's
`init_memory`; solo-learn instead ignores the loss during epoch 0).

Under a strategy the banks are identical on every replica (`MemoryBank`), so every worker
computes the same k-means; the chief's result is then broadcast (`broadcast_from_chief`) so that
a floating-point difference between hosts cannot split the pseudo-labels.

`zoo-train` calls `on_epoch_start`; in your own `fit`, pass `method.epoch_start_callback(images)`.
Without it the prototypes and pseudo-labels stay at their random initial values.
"""
import dataclasses
import warnings

import numpy as np
import tensorflow as tf

from zoo import augment, losses
from zoo.distribute import broadcast_from_chief
from zoo.heads import mlp_head
from zoo.memory_bank import MemoryBank, bank_rows, random_unit_rows
from zoo.methods.base import MethodConfig, SSLMethod
from zoo.registry import register_method


@dataclasses.dataclass
class DeepClusterV2Config(MethodConfig):
    num_examples: int = 0                   # training-set size = bank rows; filled in by the trainer
    projection_hidden_dim: int = 2048
    projection_dim: int = 128
    num_prototypes: tuple = (3000, 3000, 3000)
    temperature: float = 0.1
    kmeans_iterations: int = 10
    kmeans_seed: int = 0                    # + the epoch: a new initialisation every epoch
    crop_scale: tuple = (0.14, 1.0)         # the official code's large crops
    jitter_strength: float = 0.5
    blur: bool | None = None                # None: only for images >= 96 px
    embed_batch_size: int = 512             # batch of the forward pass that fills the banks


def spherical_assignments(bank, centroids):
    """(unit centroids [K, D], cluster of every bank row [N]): centroids L2-normalised, each row
    assigned to the centroid of highest dot product (the prototype scores of the loss)."""
    centroids = centroids / np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
    return centroids.astype(np.float32), np.argmax(bank @ centroids.T, axis=1).astype(np.int32)


@register_method("deepclusterv2")
class DeepClusterV2(SSLMethod):
    Config = DeepClusterV2Config
    metric_names = ("cluster_accuracy",)
    uses_example_ids = True
    num_crops = 2

    def build_heads(self):
        c = self.config
        rows = bank_rows(c.num_examples)
        self.projector = mlp_head(self.feature_dim, c.projection_hidden_dim, c.projection_dim, sync_bn=c.sync_bn,
                                  name="projector")
        self.banks = [MemoryBank(rows, c.projection_dim, momentum=0.0, seed=i, name=f"memory_bank_{i}")
                      for i in range(self.num_crops)]
        state = dict(trainable=False, autocast=False, aggregation="only_first_replica")
        self.prototypes = [self.add_weight(name=f"prototypes_{j}", shape=(k, c.projection_dim), **state,
                                           initializer=lambda shape, dtype, j=j: random_unit_rows(shape, 100 + j))
                           for j, k in enumerate(c.num_prototypes)]
        # random pseudo-labels until the first k-means (a fit without `on_epoch_start`)
        self.assignments = self.add_weight(
            name="assignments", shape=(len(c.num_prototypes), rows), dtype="int32", **state,
            initializer=lambda shape, dtype: tf.stack([tf.random.stateless_uniform(
                shape[1:], [7, j], 0, k, tf.int32) for j, k in enumerate(c.num_prototypes)]))
        self.clustered_epoch = self.add_weight(name="clustered_epoch", shape=(), dtype="int32",
                                               initializer=lambda shape, dtype: tf.constant(-1, tf.int32), **state)
        self._has_clusters = self._warned_unclustered = False  # Python flags, read when a step is traced

    def make_views(self, images, labels, seed):
        return {**augment.simclr_view_pair(images, seed, self.config), "ids": labels}

    def project(self, images, training=False):
        """L2-normalised float32 projections of a batch of views."""
        z = self.projector(self.encoder(images, training=training), training=training)
        return tf.math.l2_normalize(tf.cast(z, tf.float32), axis=1)

    def step_forward(self, views, training=False):
        ids = self.banks[0].wrap_ids(views["ids"])
        zs = [self.project(views["view_a"], training), self.project(views["view_b"], training)]
        total, correct = 0.0, 0.0
        for j, prototypes in enumerate(self.prototypes):
            targets = tf.gather(self.assignments[j], ids)
            for z in zs:
                logits = tf.matmul(z, tf.stop_gradient(prototypes), transpose_b=True) / self.config.temperature
                total += losses.cross_entropy(targets, logits)
                correct += losses.accuracy(targets, logits)
        pairs = len(self.prototypes) * len(zs)
        return total / pairs, {"cluster_accuracy": correct / pairs}, (ids, [tf.stop_gradient(z) for z in zs])

    def pretext_loss(self, views, training=False):
        loss, metrics, _ = self.step_forward(views, training)
        return loss, metrics

    def after_update(self, views, aux, updated):
        if not self._has_clusters and not self._warned_unclustered:  # read when `fit` traces its step,
            self._warned_unclustered = True                           # after the epoch-start callback
            warnings.warn("deepclusterv2: fit started without k-means: the pseudo-labels are random. Pass "
                          "callbacks=[method.epoch_start_callback(images)] to fit (zoo-train does).", stacklevel=2)
        ids, zs = aux  # each crop's projections replace the rows of the batch's images (all replicas)
        for bank, z in zip(self.banks, zs):
            bank.update(ids, z)

    # --- between epochs, on the host ------------------------------------------------------
    def fill_banks(self, images):
        """Write the projection of every (un-augmented) training image into every bank."""
        c = self.config
        for start, batch in augment.plain_batches(images, c.image_size, c.embed_batch_size):
            z = self.project(batch, training=False)
            ids = tf.range(start, start + batch.shape[0])
            for bank in self.banks:
                bank.update(ids, z)

    def cluster(self, epoch):
        """k-means of every prototype set on its bank: sets the prototypes and the assignments."""
        from sklearn.cluster import KMeans
        c = self.config
        banks = [bank.read().numpy() for bank in self.banks]
        all_assignments = []
        for j, (k, prototypes) in enumerate(zip(c.num_prototypes, self.prototypes)):
            bank = banks[j % len(banks)]
            kmeans = KMeans(n_clusters=k, init="random", n_init=1, max_iter=c.kmeans_iterations,
                            random_state=c.kmeans_seed + 1000 * epoch + j).fit(bank)
            centroids, assignments = spherical_assignments(bank, kmeans.cluster_centers_)
            prototypes.assign(broadcast_from_chief(centroids, self.distribute_strategy))
            all_assignments.append(assignments)
        self.assignments.assign(broadcast_from_chief(np.stack(all_assignments), self.distribute_strategy))

    def on_epoch_start(self, epoch, images=None, labels=None):
        """Fill the banks (first epoch of a run) and re-cluster (`labels` unused). Skipped when this
        epoch's clustering is already in the weights (a run resumed in the middle of the epoch)."""
        self._has_clusters = True
        done = int(self.clustered_epoch.numpy())
        if done == epoch:
            return
        if done < 0 and images is not None:
            self.fill_banks(images)
        self.cluster(epoch)
        self.clustered_epoch.assign(epoch)
