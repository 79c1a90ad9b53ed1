"""DeepCluster (Caron, Bojanowski, Joulin, Douze, ECCV 2018; the official facebookresearch/deepcluster).

Alternates clustering and classification:

- Between epochs (`on_epoch_start`, on the host): the encoder's features of every (un-augmented)
  training image, PCA-whitened to `pca_dim` dimensions (scikit-learn `PCA(whiten=True)`; the
  paper: 256) and L2-normalised, are clustered by k-means (scikit-learn `KMeans`, `init="random"`
  and 20 Lloyd iterations as the official faiss code) into `num_clusters` groups, many more than
  the classes (the paper: 10,000 on ImageNet; here 10x the classes). Clusters left empty are
  re-seeded by splitting a large one (`reseed_empty_clusters`, the official code's trick; scikit-
  learn relocates empty clusters itself, so this rarely acts). The cluster of each image becomes
  its pseudo-label (one per example id: `uses_example_ids`), and the classifier head (one Dense
  layer on the features) is re-initialised (N(0, 0.01^2) kernel, zero bias, as the official code's
  new top layer), since the new cluster ids have no relation to the old ones.
- During the epoch: one view per image (random resized crop + horizontal flip, optionally
  Sobel-filtered), and the cross-entropy of the head's logits against the image's pseudo-label.

Uniform sampling over pseudo-labels: the paper draws images uniformly over the clusters, so that
a huge cluster cannot dominate (a trivial solution). The pipeline here draws images uniformly,
so each image's loss is weighted by 1 / (size of its cluster), normalised so that the weights
average to 1 over the training set (`uniform_cluster_weights`): the expected loss of a batch is
then the paper's (every non-empty cluster carries the same total weight), with more variance.

Metrics: `cluster_accuracy` (the head against the pseudo-labels), and, set at each clustering,
`nmi_previous` (NMI between this epoch's and the previous epoch's assignments: the paper's
figure 2b, stability of the clustering) and `nmi_labels` (NMI against the real labels when the
data has at least two classes: figure 2a); -1 when not available. NMI is the paper's
I(A; B) / sqrt(H(A) H(B)) (scikit-learn, average_method="geometric").

Under a strategy every worker computes the same features and k-means; the chief's assignments
and weights are then broadcast (`broadcast_from_chief`) so that a floating-point difference
between hosts cannot split the pseudo-labels. A run resumed inside an epoch keeps that epoch's
clustering and head (`clustered_epoch`, in the checkpoint) instead of re-clustering.

Differences from the paper: a ResNet instead of AlexNet / VGG-16 (the features clustered are the
encoder's pooled features, not fc7 after an MLP); images sampled uniformly with weighted losses
instead of sampled uniformly over clusters; the head trained by the run's optimizer, its state
(momentum) zeroed at each clustering (the official code trains the top layer with a separate
momentum-free SGD, made anew every epoch); with `sobel` the backbone's 3 input channels hold
(d/dx, d/dy, 0) (the paper: 2 channels), and that encoder expects Sobel images, which `zoo.load`
and `zoo-eval` do not make (they feed RGB), so `sobel` is off by default and in the CIFAR-10 recipe.

`zoo-train` calls `on_epoch_start`; in your own `fit`, pass
`method.epoch_start_callback(images, labels)`. Without it the pseudo-labels stay random.
"""
import dataclasses
import time
import warnings

import numpy as np
import tensorflow as tf

from zoo import augment, losses
from zoo.distribute import broadcast_from_chief
from zoo.heads import linear_head
from zoo.memory_bank import bank_rows
from zoo.methods.base import MethodConfig, SSLMethod
from zoo.registry import register_method


@dataclasses.dataclass
class DeepClusterConfig(MethodConfig):
    num_examples: int = 0                   # training-set size = pseudo-labels; filled in by the trainer
    num_clusters: int = 100                 # k: 10x the classes (the paper: 10,000 on ImageNet)
    pca_dim: int = 256                      # the paper's; capped at the feature dimension
    kmeans_iterations: int = 20             # the official code's faiss niter
    kmeans_seed: int = 0                    # + the epoch: a new initialisation every epoch
    crop_scale: tuple = (0.08, 1.0)         # random resized crop (the paper's torchvision default)
    sobel: bool = False                     # the paper: True (see the module docstring)
    embed_batch_size: int = 512             # batch of the forward pass over the training images


def pca_whiten(features, pca_dim, seed=0):
    """Features [N, D] projected on their top min(pca_dim, D, N - 1) principal components and
    whitened (unit variance per component; scikit-learn PCA(whiten=True), the official code's faiss
    PCAMatrix with eigen_power -0.5). Components of (numerically) zero variance are dropped: their
    whitening would divide by zero."""
    from sklearn.decomposition import PCA
    features = np.asarray(features, np.float64)
    dim = min(int(pca_dim), features.shape[1], features.shape[0] - 1)
    if dim < 1:
        raise ValueError(f"deepcluster: cannot PCA-whiten {features.shape[0]} feature vectors; need at least 2.")
    pca = PCA(n_components=dim, whiten=True, random_state=seed).fit(features)
    keep = pca.explained_variance_ > 1e-10 * max(pca.explained_variance_[0], 1e-30)
    return pca.transform(features)[:, keep].astype(np.float32)


def l2_normalize(x):
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def reseed_empty_clusters(points, labels, centroids, rng, eps=1.0 / 1024):
    """(labels, centroids) with no empty cluster, by the official code's split (faiss's k-means):
    each empty cluster takes the centroid of a non-empty cluster drawn with probability
    proportional to its size (clusters of one point cannot be split), the two centroids are pushed
    apart by a relative perturbation of `eps` (+ on one, - on the other, alternating over the
    dimensions), and the points of the split cluster go to the nearer of the two (by halves, in
    order, when they are all equally near, e.g. identical points). Numpy in, new arrays out."""
    labels, centroids = np.array(labels, np.int64), np.array(centroids, np.float64)
    points = np.asarray(points, np.float64)
    k = len(centroids)
    for empty in np.flatnonzero(np.bincount(labels, minlength=k) == 0):
        sizes = np.bincount(labels, minlength=k).astype(np.float64)
        splittable = np.where(sizes >= 2, sizes, 0.0)
        if splittable.sum() == 0:
            break  # every cluster holds at most one point: nothing to split
        big = rng.choice(k, p=splittable / splittable.sum())
        sign = np.where(np.arange(centroids.shape[1]) % 2 == 0, 1.0, -1.0)
        centroids[empty] = centroids[big] * (1 + eps * sign)
        centroids[big] = centroids[big] * (1 - eps * sign)
        members = np.flatnonzero(labels == big)
        d_empty = np.sum((points[members] - centroids[empty]) ** 2, axis=1)
        d_big = np.sum((points[members] - centroids[big]) ** 2, axis=1)
        to_empty = d_empty < d_big
        if to_empty.all() or not to_empty.any():
            to_empty = np.arange(len(members)) < len(members) // 2
        labels[members[to_empty]] = empty
    return labels, centroids


def uniform_cluster_weights(labels, num_clusters):
    """Loss weight of each cluster [num_clusters]: n / (used clusters * cluster size), 0 for an empty
    one. Weighting each image's loss by its cluster's weight gives every used cluster the same total
    weight (the paper's sampling uniform over pseudo-labels), and the weights of the n images
    average to 1."""
    sizes = np.bincount(labels, minlength=num_clusters).astype(np.float64)
    used = np.count_nonzero(sizes)
    weights = np.zeros(num_clusters)
    weights[sizes > 0] = len(labels) / (used * sizes[sizes > 0])
    return weights.astype(np.float32)


def nmi(a, b):
    """The paper's normalised mutual information I(a; b) / sqrt(H(a) H(b)) of two labellings."""
    from sklearn.metrics import normalized_mutual_info_score
    return float(normalized_mutual_info_score(a, b, average_method="geometric"))


@register_method("deepcluster")
class DeepCluster(SSLMethod):
    Config = DeepClusterConfig
    metric_names = ("cluster_accuracy", "nmi_previous", "nmi_labels")
    uses_example_ids = True

    def build_heads(self):
        c = self.config
        if c.num_clusters < 2:
            raise ValueError(f"deepcluster: num_clusters={c.num_clusters}; must be at least 2.")
        if c.pca_dim < 1:
            raise ValueError(f"deepcluster: pca_dim={c.pca_dim}; must be at least 1.")
        self.unit_range_views = not c.sobel  # Sobel gradients lie in [-4, 4]
        rows = bank_rows(c.num_examples)
        self.classifier = linear_head(self.feature_dim, c.num_clusters, name="classifier")
        state = dict(trainable=False, autocast=False, aggregation="only_first_replica")
        # random pseudo-labels and unit weights until the first k-means (a fit without `on_epoch_start`)
        self.assignments = self.add_weight(
            name="assignments", shape=(rows,), dtype="int32", **state,
            initializer=lambda shape, dtype: tf.random.stateless_uniform(shape, [7, 0], 0, c.num_clusters, tf.int32))
        self.cluster_weights = self.add_weight(name="cluster_weights", shape=(c.num_clusters,), dtype="float32",
                                               initializer="ones", **state)
        scalar = dict(shape=(), initializer=lambda shape, dtype: tf.constant(-1, dtype), **state)
        self.clustered_epoch = self.add_weight(name="clustered_epoch", dtype="int32", **scalar)
        self.nmi_previous = self.add_weight(name="nmi_previous", dtype="float32", **scalar)
        self.nmi_labels = self.add_weight(name="nmi_labels", dtype="float32", **scalar)
        self._has_clusters = self._warned_unclustered = False  # Python flags, read when a step is traced

    # --- views ----------------------------------------------------------------------------
    def _input(self, images):
        return augment.sobel(images) if self.config.sobel else images

    def make_views(self, images, labels, seed):
        s_crop, s_flip = augment.split_seed(seed, 2)
        x = augment.random_resized_crop(augment.to_float(images), self.config.image_size, s_crop,
                                        scale=tuple(self.config.crop_scale))
        return {"image": self._input(augment.random_flip(x, s_flip)), "ids": labels}

    # --- loss -----------------------------------------------------------------------------
    def pretext_loss(self, views, training=False):
        ids = tf.math.floormod(tf.cast(views["ids"], tf.int32), self.assignments.shape[0])
        targets = tf.gather(self.assignments, ids)
        weights = tf.gather(self.cluster_weights, targets)  # uniform over pseudo-labels in expectation
        logits = tf.cast(self.classifier(self.encoder(views["image"], training=training), training=training),
                         tf.float32)
        per_image = tf.nn.sparse_softmax_cross_entropy_with_logits(targets, logits)
        loss = tf.reduce_mean(weights * per_image)
        return loss, {"cluster_accuracy": losses.accuracy(targets, logits),
                      "nmi_previous": tf.identity(self.nmi_previous), "nmi_labels": tf.identity(self.nmi_labels)}

    def after_update(self, views, aux, updated):
        if not self._has_clusters and not self._warned_unclustered:  # read when `fit` traces its step,
            self._warned_unclustered = True                           # after the epoch-start callback
            warnings.warn("deepcluster: fit started without k-means: the pseudo-labels are random. Pass "
                          "callbacks=[method.epoch_start_callback(images, labels)] to fit (zoo-train does).",
                          stacklevel=2)

    # --- between epochs, on the host ------------------------------------------------------
    def clustering_features(self, images):
        """Encoder features of every un-augmented training image (resized to `image_size`, Sobel-
        filtered with `sobel`), float32 [N, D], with a progress line about every 10 s."""
        size, batch_size = self.config.image_size, self.config.embed_batch_size
        features, last_report = [], time.monotonic()
        for start, batch in augment.plain_batches(images, size, batch_size):
            features.append(tf.cast(self.encoder(self._input(batch), training=False), tf.float32).numpy())
            if time.monotonic() - last_report >= 10:
                last_report = time.monotonic()
                self.progress_log(f"deepcluster: features of {start + len(batch)}/{len(images)} images")
        return np.concatenate(features)

    def kmeans_assignments(self, images, epoch):
        """The pseudo-label of every training image: k-means of its whitened, L2-normalised features,
        empty clusters re-seeded. Numpy int32 [N]."""
        from sklearn.cluster import KMeans
        c = self.config
        if len(images) < c.num_clusters:
            raise ValueError(f"deepcluster: {len(images)} training images for num_clusters={c.num_clusters}; "
                             "use fewer clusters (method_config.num_clusters) than images.")
        points = l2_normalize(pca_whiten(self.clustering_features(images), c.pca_dim, seed=c.kmeans_seed))
        seed = c.kmeans_seed + 1000 * epoch
        kmeans = KMeans(n_clusters=c.num_clusters, init="random", n_init=1, max_iter=c.kmeans_iterations,
                        random_state=seed).fit(points)
        labels, _ = reseed_empty_clusters(points, kmeans.labels_, kmeans.cluster_centers_, np.random.default_rng(seed))
        return labels.astype(np.int32)

    def reset_classifier(self, epoch):
        """A new random classifier head (kernel ~ N(0, 0.01^2), zero bias: the official code's new top
        layer) and zero optimizer state for it: the new cluster ids have nothing to do with the old ones."""
        dense = self.classifier.get_layer("classifier_dense")
        kernel, bias = dense.kernel, dense.bias
        rng = np.random.default_rng([self.config.kmeans_seed, epoch])  # the same on every worker
        kernel.assign(rng.normal(0.0, 0.01, size=kernel.shape).astype(np.float32))
        bias.assign(np.zeros(bias.shape, np.float32))
        optimizer = getattr(self, "optimizer", None)
        if optimizer is not None and optimizer.built:
            # Keras names a variable's optimizer slots "{variable path with _}_{slot}" (momentum, velocity)
            prefixes = tuple(v.path.replace("/", "_") + "_" for v in (kernel, bias))
            for slot in optimizer.variables:
                if slot.name.startswith(prefixes):
                    slot.assign(tf.zeros_like(slot))

    def on_epoch_start(self, epoch, images=None, labels=None):
        """Cluster the training images, set the pseudo-labels, their loss weights and the NMI metrics,
        and re-initialise the head. Skipped when this epoch's clustering is already in the weights (a
        run resumed in the middle of the epoch)."""
        done = int(self.clustered_epoch.numpy())
        if done == epoch:
            self._has_clusters = True
            return
        if images is None:
            raise ValueError("deepcluster: on_epoch_start needs the training images (the array that example ids "
                             "index): pass method.epoch_start_callback(images, labels) to fit.")
        self._has_clusters = True
        started = time.monotonic()
        n = len(images)
        if n > self.assignments.shape[0]:
            raise ValueError(f"deepcluster: {n} training images but pseudo-labels for {self.assignments.shape[0]}; "
                             f"create the method with num_examples={n} (zoo-train fills it in).")
        previous = self.assignments.numpy()[:n].copy() if done >= 0 else None
        assignments = broadcast_from_chief(self.kmeans_assignments(images, epoch), self.distribute_strategy)
        weights = uniform_cluster_weights(assignments, self.config.num_clusters)
        self.assignments.assign(np.concatenate([assignments, self.assignments.numpy()[n:]]))
        self.cluster_weights.assign(weights)
        self.nmi_previous.assign(nmi(assignments, previous) if previous is not None else -1.0)
        has_labels = labels is not None and len(labels) == n and len(np.unique(labels)) >= 2
        self.nmi_labels.assign(nmi(assignments, np.asarray(labels)) if has_labels else -1.0)
        self.reset_classifier(epoch)
        self.clustered_epoch.assign(epoch)
        self.progress_log(f"deepcluster: epoch {epoch + 1} clustering of {n} images into "
                          f"{np.count_nonzero(weights)}/{self.config.num_clusters} clusters in "
                          f"{time.monotonic() - started:.0f} s; NMI with the previous epoch "
                          f"{float(self.nmi_previous.numpy()):.3f}, with the labels "
                          f"{float(self.nmi_labels.numpy()):.3f} (-1: none)")
