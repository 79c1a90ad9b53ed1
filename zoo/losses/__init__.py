"""Self-supervised losses as plain functions on tensors.

Inside a `tf.distribute` replica context, contrastive losses gather the other replicas'
embeddings as extra negatives (`cross_replica=True`), so N devices with B/N images each see the
same 2B-view batch as one device with B images. Each function returns the MEAN over the local
examples; the method base class divides by the number of replicas, which (with equal local
batches, guaranteed by `drop_remainder=True`) gives the mean over the global batch.

This module holds NT-Xent, SupCon, triplet and counting losses; the others live in submodules
and are re-exported here (`zoo.losses.NAME`): classification (cross_entropy, accuracy),
mutual_information (DIM, AMDIM), memory (MoCo's queue, NPID's and PIRL's bank), predictive
(CPC), siamese (BYOL, SimSiam, MoCo v3), clustering (SwAV, DINO), decorrelation (Barlow Twins,
VICReg), nearest_neighbour (NNCLR); replicas holds the cross-replica gather they share.
A submodule imports its siblings, never this package (that would be an import circle).
"""
import tensorflow as tf

from zoo.losses.classification import accuracy, cross_entropy
from zoo.losses.replicas import _replica_context, gather_across_replicas  # noqa: F401  (zoo.losses.gather_across_replicas)

_LARGE = 1e9


def nt_xent_logits(z_a, z_b, temperature=0.5, cross_replica=True):
    """Logits and labels of NT-Xent: each view against its pair and the 2N-2 other views."""
    z_a = tf.math.l2_normalize(tf.cast(z_a, tf.float32), axis=1)
    z_b = tf.math.l2_normalize(tf.cast(z_b, tf.float32), axis=1)
    if cross_replica:
        all_a, offset = gather_across_replicas(z_a)
        all_b, _ = gather_across_replicas(z_b)
    else:
        all_a, all_b, offset = z_a, z_b, 0
    n = tf.shape(z_a)[0]
    labels = tf.range(n) + offset
    self_mask = tf.one_hot(labels, tf.shape(all_a)[0]) * _LARGE
    logits_ab = tf.matmul(z_a, all_b, transpose_b=True) / temperature
    logits_aa = tf.matmul(z_a, all_a, transpose_b=True) / temperature - self_mask
    logits_ba = tf.matmul(z_b, all_a, transpose_b=True) / temperature
    logits_bb = tf.matmul(z_b, all_b, transpose_b=True) / temperature - self_mask
    logits = tf.concat([tf.concat([logits_ab, logits_aa], 1), tf.concat([logits_ba, logits_bb], 1)], 0)
    return logits, tf.concat([labels, labels], 0)


def nt_xent(z_a, z_b, temperature=0.5, cross_replica=True):
    """NT-Xent (SimCLR, Chen et al. 2020): mean over the 2N views of
    -log exp(cos(z_i, z_j)/t) / sum_{k != i} exp(cos(z_i, z_k)/t), where j is i's pair.

    z_a[i] and z_b[i] are the projections of two views of image i."""
    logits, labels = nt_xent_logits(z_a, z_b, temperature, cross_replica)
    return cross_entropy(labels, logits)


def counting_loss(phi_down_x, phi_tiles_x, phi_down_y, margin=10.0):
    """Counting (Noroozi, Pirsiavash, Favaro, ICCV 2017): mean over the local batch of
    |phi(D x) - sum_j phi(T_j x)|^2 + max(0, M - |phi(D y) - sum_j phi(T_j x)|^2).

    phi_down_x, phi_down_y: [B, D] counts of the downsampled images x and (another image) y;
    phi_tiles_x: [B, T, D] counts of x's T tiles; |.|^2 is the squared Euclidean norm."""
    tiles = tf.reduce_sum(tf.cast(phi_tiles_x, tf.float32), axis=1)
    equal = tf.reduce_sum(tf.square(tf.cast(phi_down_x, tf.float32) - tiles), axis=-1)
    other = tf.reduce_sum(tf.square(tf.cast(phi_down_y, tf.float32) - tiles), axis=-1)
    return tf.reduce_mean(equal + tf.nn.relu(margin - other))


# ---- label-aware losses: SupCon and triplet (positives share a label, or are views of one image) ----

def _global_views(z, labels, cross_replica=True):
    """The anchors of this replica and the views of the global batch they are compared with.

    z: [B, V, D], the V views of image i in z[i]; labels: [B] ints, negative = unlabelled.
    Returns (anchors [B*V, D], all_z [R*B*V, D], anchor_keys [B*V], all_keys [R*B*V],
    self_index [B*V]): rows image-major (view v of image i is row i*V + v), R = replicas
    (1 unless cross_replica and in a multi-replica run), self_index = each anchor's own row of
    all_z. Two views are positives iff their keys are equal: key = label for labelled images
    and -1 - (index of the image in the global batch) for unlabelled ones, so an unlabelled
    image's only positives are its own other views."""
    z = tf.cast(z, tf.float32)
    labels = tf.reshape(tf.cast(labels, tf.int32), [-1])
    views, dim = z.shape[1], z.shape[2]
    if cross_replica:
        all_z, offset = gather_across_replicas(z)
        all_labels, _ = gather_across_replicas(labels)
    else:
        all_z, all_labels, offset = z, labels, 0
    all_keys = tf.where(all_labels >= 0, all_labels, -1 - tf.range(tf.shape(all_labels)[0]))
    anchor_keys = tf.gather(all_keys, offset + tf.range(tf.shape(labels)[0]))
    self_index = offset * views + tf.range(tf.shape(labels)[0] * views)
    return (tf.reshape(z, [-1, dim]), tf.reshape(all_z, [-1, dim]), tf.repeat(anchor_keys, views),
            tf.repeat(all_keys, views), self_index)


def _replica_share(local_sum, local_count, cross_replica=True):
    """local_sum / count for a loss that is a mean over a label-dependent number of terms
    (triplets, pairs), as this replica's share: the mean over replicas of the returned values
    (what the base class's division by the replica count computes) is the global sum over the
    global count. The count is a constant for the gradient; a zero count gives 0."""
    count = tf.stop_gradient(tf.cast(local_count, tf.float32))
    ctx = _replica_context() if cross_replica else None
    if ctx is None:
        return local_sum / tf.maximum(count, 1.0)
    total = ctx.all_reduce(tf.distribute.ReduceOp.SUM, count)
    return local_sum * ctx.num_replicas_in_sync / tf.maximum(total, 1.0)


def supcon_logits(z, labels, temperature=0.1, cross_replica=True):
    """Logits and positive mask of SupCon: each local view (anchor) against every view of the
    global batch, cos(z_i, z_k) / t, its own column pushed to -1e9 (out of every softmax).

    z: [B, V, D] projections of V views of each of B images; labels: [B] (negative: unlabelled,
    positives only its own views). Returns logits [B*V, R*B*V] and positive [B*V, R*B*V] (bool,
    same key and not the anchor itself); rows and columns as in `_global_views`."""
    anchors, all_z, anchor_keys, all_keys, self_index = _global_views(z, labels, cross_replica)
    anchors = tf.math.l2_normalize(anchors, axis=1)
    all_z = tf.math.l2_normalize(all_z, axis=1)
    is_self = tf.equal(tf.range(tf.shape(all_z)[0])[None, :], self_index[:, None])
    logits = tf.matmul(anchors, all_z, transpose_b=True) / temperature - tf.cast(is_self, tf.float32) * _LARGE
    positive = tf.logical_and(tf.equal(anchor_keys[:, None], all_keys[None, :]), tf.logical_not(is_self))
    return logits, positive


def supcon_loss_from_logits(logits, positive):
    """Mean over anchors of -1/|P(i)| sum_{p in P(i)} log softmax_{k != i}(logits_i)_p (the
    paper's L_out: the mean over positives outside the log). An anchor without positives
    contributes 0 (never with V >= 2 views per image)."""
    log_prob = tf.nn.log_softmax(logits, axis=1)
    pos = tf.cast(positive, tf.float32)
    per_anchor = -tf.reduce_sum(pos * log_prob, axis=1) / tf.maximum(tf.reduce_sum(pos, axis=1), 1.0)
    return tf.reduce_mean(per_anchor)


def supcon_loss(z, labels, temperature=0.1, cross_replica=True):
    """Supervised contrastive loss (Khosla et al. 2020, eq. 2, L_out^sup): every view with the
    anchor's label is a positive, every other view of the (global) batch a negative:
    mean over anchors i of -1/|P(i)| sum_{p in P(i)} log exp(z_i.z_p/t) / sum_{k != i} exp(z_i.z_k/t)
    with z L2-normalised. z: [B, V, D] (V views of each of B images), labels: [B]. With all
    labels distinct (or all negative = unlabelled) it is NT-Xent (`nt_xent` for V = 2)."""
    return supcon_loss_from_logits(*supcon_logits(z, labels, temperature, cross_replica))


def triplet_pairs(z, labels, squared=True, cross_replica=True):
    """Distances and masks for triplet mining over the global batch.

    z: [B, V, D] embeddings (as given: FaceNet L2-normalises them first), labels: [B] (negative:
    unlabelled, positives only its own views). Returns dist [B*V, R*B*V] (squared Euclidean,
    or Euclidean if not `squared`) from each local view to every view of the global batch,
    positive (same key, not itself) and negative (other key) bool masks; layout of `_global_views`."""
    anchors, all_z, anchor_keys, all_keys, self_index = _global_views(z, labels, cross_replica)
    sq = (tf.reduce_sum(tf.square(anchors), axis=1)[:, None] + tf.reduce_sum(tf.square(all_z), axis=1)[None, :]
          - 2.0 * tf.matmul(anchors, all_z, transpose_b=True))
    sq = tf.maximum(sq, 0.0)
    if squared:
        dist = sq
    else:  # sqrt with a finite gradient at 0 (identical embeddings)
        nonzero = sq > 1e-12
        dist = tf.where(nonzero, tf.sqrt(tf.where(nonzero, sq, 1.0)), 0.0)
    same = tf.equal(anchor_keys[:, None], all_keys[None, :])
    not_self = tf.not_equal(tf.range(tf.shape(all_z)[0])[None, :], self_index[:, None])
    return dist, tf.logical_and(same, not_self), tf.logical_not(same)


def _sorted_negatives(dist, negative):
    """Each row's negative distances in ascending order, padded with +inf."""
    return tf.sort(tf.where(negative, dist, float("inf")), axis=1)


def triplet_batch_all(dist, positive, negative, margin=0.2, cross_replica=True):
    """Batch-all (Hermans, Beyer, Leibe 2017): the mean of max(0, d(a,p) - d(a,n) + margin)
    over all triplets of the global batch whose loss is positive.

    Without the [A, M, M] tensor of all triplets: per anchor, the negatives sorted; for each
    positive p, the k negatives with d(a,n) < d(a,p) + margin are the active ones and their
    losses sum to k (d(a,p) + margin) - (sum of the k smallest negative distances)."""
    neg = _sorted_negatives(dist, negative)
    prefix = tf.pad(tf.cumsum(tf.where(tf.math.is_finite(neg), neg, 0.0), axis=1), [[0, 0], [1, 0]])
    threshold = dist + margin
    active = tf.searchsorted(neg, threshold, side="left")  # negatives strictly below the threshold
    pair_sum = tf.cast(active, tf.float32) * threshold - tf.gather(prefix, active, batch_dims=1)
    pos = tf.cast(positive, tf.float32)
    return _replica_share(tf.reduce_sum(pos * pair_sum), tf.reduce_sum(pos * tf.cast(active, tf.float32)),
                          cross_replica)


def triplet_batch_hard(dist, positive, negative, margin=0.2, cross_replica=True):
    """Batch-hard (Hermans et al. 2017): per anchor max(0, max_p d(a,p) - min_n d(a,n) + margin),
    averaged over the anchors that have a positive and a negative in the global batch."""
    hardest_pos = tf.reduce_max(tf.where(positive, dist, float("-inf")), axis=1)
    hardest_neg = tf.reduce_min(tf.where(negative, dist, float("inf")), axis=1)
    valid = tf.logical_and(tf.reduce_any(positive, axis=1), tf.reduce_any(negative, axis=1))
    loss = tf.where(valid, tf.nn.relu(tf.where(valid, hardest_pos - hardest_neg, 0.0) + margin), 0.0)
    return _replica_share(tf.reduce_sum(loss), tf.reduce_sum(tf.cast(valid, tf.float32)), cross_replica)


def triplet_semi_hard(dist, positive, negative, margin=0.2, cross_replica=True):
    """Semi-hard (FaceNet, Schroff et al. 2015; the tfa.losses.TripletSemiHardLoss rule): for
    every anchor-positive pair, the closest negative farther than the positive
    (d(a,n) > d(a,p)), or the farthest negative if there is none; the mean of
    max(0, d(a,p) - d(a,n) + margin) over all anchor-positive pairs of the global batch."""
    neg = _sorted_negatives(dist, negative)
    num_neg = tf.reduce_sum(tf.cast(negative, tf.int32), axis=1)
    farther = tf.searchsorted(neg, dist, side="right")  # first negative with d(a,n) > d(a,p)
    farthest = tf.gather(neg, tf.maximum(num_neg - 1, 0)[:, None], batch_dims=1)
    chosen = tf.where(farther < num_neg[:, None],
                      tf.gather(neg, tf.minimum(farther, tf.shape(neg)[1] - 1), batch_dims=1), farthest)
    valid = tf.logical_and(positive, (num_neg > 0)[:, None])
    loss = tf.where(valid, tf.nn.relu(tf.where(valid, dist - chosen, 0.0) + margin), 0.0)
    return _replica_share(tf.reduce_sum(loss), tf.reduce_sum(tf.cast(valid, tf.float32)), cross_replica)


TRIPLET_MINING = {"batch_all": triplet_batch_all, "batch_hard": triplet_batch_hard, "semi_hard": triplet_semi_hard}


def triplet_loss(z, labels, margin=0.2, mining="semi_hard", squared=True, cross_replica=True):
    """Triplet loss (FaceNet) max(0, d(a,p) - d(a,n) + margin) with `mining` one of
    TRIPLET_MINING, over the global batch. z: [B, V, D] embeddings, labels: [B] (see
    `triplet_pairs`). Returns this replica's share (see `_replica_share`)."""
    if mining not in TRIPLET_MINING:
        raise ValueError(f"Unknown triplet mining {mining!r}; choose one of {sorted(TRIPLET_MINING)}.")
    dist, positive, negative = triplet_pairs(z, labels, squared, cross_replica)
    return TRIPLET_MINING[mining](dist, positive, negative, margin, cross_replica)


__all__ = ["nt_xent", "nt_xent_logits", "gather_across_replicas", "cross_entropy", "accuracy", "counting_loss",
           "supcon_logits", "supcon_loss_from_logits", "supcon_loss", "triplet_pairs", "triplet_batch_all",
           "triplet_batch_hard", "triplet_semi_hard", "TRIPLET_MINING", "triplet_loss",
           "mi_jsd", "mi_dv", "mi_infonce", "infonce_loss", "mi_loss", "MI_ESTIMATORS", "same_image_mask", "tanh_clip",
           "flatten_locations", "global_local_scores", "moco_logits", "npid_logits", "pirl_loss", "cpc_logits",
           "CPC_NEGATIVES"]
from zoo.losses.siamese import byol_loss, mocov3_logits, mocov3_loss, negative_cosine, simsiam_loss  # noqa: E402,F401
from zoo.losses.clustering import (dino_batch_center, dino_loss, iic_joint, iic_loss,  # noqa: E402,F401
                                   iic_mutual_information, sinkhorn, swav_loss)
from zoo.losses.decorrelation import barlow_twins_loss, barlow_twins_terms, vicreg_loss, vicreg_terms  # noqa: E402,F401
from zoo.losses.nearest_neighbour import nearest_neighbours, nnclr_logits, nnclr_loss  # noqa: E402,F401
from zoo.losses.mutual_information import (MI_ESTIMATORS, flatten_locations, global_local_scores, infonce_loss,  # noqa: E402,F401
                                           mi_dv, mi_infonce, mi_jsd, mi_loss, same_image_mask, tanh_clip)
from zoo.losses.memory import moco_logits, npid_logits, pirl_loss  # noqa: E402,F401
from zoo.losses.predictive import CPC_NEGATIVES, cpc_logits  # noqa: E402,F401
