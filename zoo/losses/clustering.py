"""Losses of the online-clustering and self-distillation methods: SwAV's Sinkhorn-Knopp codes and
swapped prediction (Caron et al. 2020), DINO's centred, sharpened cross-entropy (Caron et al.
2021) and IIC's mutual information of paired cluster assignments (Ji et al. 2019). Plain
functions on tensors, computed in float32 (IIC's in float64 for float64 inputs).

All use batch statistics (Sinkhorn's prototype marginals, DINO's centre, IIC's joint), which are
taken over the GLOBAL batch inside a tf.distribute replica context (all-reduced sums; Sinkhorn's
row log-sum-exps gathered from every replica), so N replicas with B/N images each compute what
one device computes with B. SwAV's and DINO's losses return the mean over the LOCAL examples, and
the method base class's division by the replica count makes the global mean; IIC's loss is a
function of the global joint only, so every replica returns the global value (as the Barlow Twins
loss in zoo.losses.decorrelation does).
"""
import sys

import tensorflow as tf

from zoo.losses.replicas import _replica_context, gather_across_replicas


def _all_sum(x):
    """x summed over the replicas (the identity outside a multi-replica run)."""
    ctx = _replica_context()
    return x if ctx is None else ctx.all_reduce(tf.distribute.ReduceOp.SUM, x)


def _num_replicas():
    ctx = _replica_context()
    return 1 if ctx is None else ctx.num_replicas_in_sync


def _global_logsumexp(x, axis):
    """log sum exp of x along `axis` over the GLOBAL batch (x holds this replica's part of that
    axis), keepdims."""
    local = tf.reduce_logsumexp(x, axis=axis, keepdims=True)
    if _replica_context() is None:
        return local
    return tf.reduce_logsumexp(gather_across_replicas(local[None])[0], axis=0)


def sinkhorn(scores, epsilon=0.05, iterations=3):
    """SwAV's codes (Caron et al. 2020, section 3.1 and algorithm 1; `distributed_sinkhorn` of the
    official code): soft assignments of the B samples of the GLOBAL batch to the K prototypes
    with equal shares per prototype. scores [B_local, K] (prototype scores, e.g. cosines z.c_k)
    -> codes [B_local, K], each row summing to 1. No gradient.

    With Q = exp(scores / epsilon)^T [K, B], each iteration divides every row (prototype) by its
    sum over the global batch and by K (rows then sum to 1/K), then every column (sample) by its
    sum and by B (columns sum to 1/B): Q in the transportation polytope of the paper,
    Q 1_B = 1_K / K and Q^T 1_K = 1_B / B, approximately after a few iterations. Finally Q * B
    (columns sum to 1) is returned transposed. The same steps in the log domain (logsumexp instead
    of sums), so that exp(scores / epsilon) can neither overflow nor underflow to an all-zero
    column; the official code's first division of Q by its total cancels in the row step."""
    log_q = tf.transpose(tf.stop_gradient(tf.cast(scores, tf.float32))) / epsilon  # [K, B_local]
    log_k = tf.math.log(tf.cast(tf.shape(log_q)[0], tf.float32))
    log_b = tf.math.log(tf.cast(tf.shape(log_q)[1] * _num_replicas(), tf.float32))
    for _ in range(iterations):
        log_q = log_q - _global_logsumexp(log_q, axis=1) - log_k                 # prototypes: 1/K each
        log_q = log_q - tf.reduce_logsumexp(log_q, axis=0, keepdims=True) - log_b  # samples: 1/B each
    return tf.stop_gradient(tf.transpose(tf.exp(log_q + log_b)))


def _cross_entropy_over_pairs(targets, log_probs):
    """Mean over pairs (a, v) with a != v of the mean over the batch of
    -sum_k targets[a, b, k] * log_probs[v, b, k]; targets [A, B, K] belong to the first A of the
    V crops of log_probs [V, B, K] (so pair (a, a) compares a crop with itself and is left out)."""
    ce = -tf.einsum("abk,vbk->avb", targets, log_probs)  # [A, V, B]
    num_targets, num_views = targets.shape[0], log_probs.shape[0]
    other = 1.0 - tf.eye(num_targets, num_views)
    pairs = num_targets * num_views - min(num_targets, num_views)
    return tf.reduce_sum(tf.reduce_mean(ce, axis=2) * other) / pairs


def swav_loss(scores, codes, temperature=0.1):
    """SwAV's swapped prediction (Caron et al. 2020, eq. 1-2): the code of crop a (one of the A
    crops with codes, the large ones) is predicted from every OTHER crop v by
    p_v = softmax(scores_v / temperature), cross-entropy -sum_k q_a,k log p_v,k; the mean over the
    local batch, over the V - 1 other crops and over the A coded crops.

    scores: [V, B, K] prototype scores of all V crops, the A coded crops first; codes: [A, B, K]
    (from `sinkhorn`, no gradient)."""
    log_p = tf.nn.log_softmax(tf.cast(scores, tf.float32) / temperature, axis=-1)
    return _cross_entropy_over_pairs(tf.stop_gradient(tf.cast(codes, tf.float32)), log_p)


def dino_loss(student_logits, teacher_logits, center, student_temperature=0.1, teacher_temperature=0.04):
    """DINO's self-distillation loss (Caron et al. 2021, algorithm 1): the teacher's output on
    large crop a, centred and sharpened, P_t = softmax((t_a - center) / teacher_temperature)
    (no gradient), is the target of the student's output on every other crop v,
    P_s = softmax(s_v / student_temperature), cross-entropy -sum_k P_t,k log P_s,k; the mean over
    the local batch and over all pairs (a, v), v != a.

    student_logits: [V, B, K] (all crops, the A large crops first); teacher_logits: [A, B, K];
    center: [K]."""
    teacher = (tf.cast(teacher_logits, tf.float32) - tf.cast(center, tf.float32)) / teacher_temperature
    targets = tf.stop_gradient(tf.nn.softmax(teacher, axis=-1))
    log_p = tf.nn.log_softmax(tf.cast(student_logits, tf.float32) / student_temperature, axis=-1)
    return _cross_entropy_over_pairs(targets, log_p)


def dino_batch_center(teacher_logits):
    """The mean teacher output [K] over every crop of the GLOBAL batch (all-reduced sums), the
    batch term of DINO's centre update c <- m c + (1 - m) mean. teacher_logits: [A, B, K]. No
    gradient."""
    t = tf.stop_gradient(tf.cast(teacher_logits, tf.float32))
    count = tf.cast(tf.shape(t)[0] * tf.shape(t)[1] * _num_replicas(), tf.float32)
    return _all_sum(tf.reduce_sum(t, axis=[0, 1])) / count


def iic_joint(p_a, p_b):
    """IIC's joint distribution of the cluster assignments of paired samples over the GLOBAL batch
    (Ji et al. 2019, eq. 3 and its symmetrisation): P = (1/n) sum_i p_a[i] p_b[i]^T, then
    (P + P^T) / 2. p_a, p_b: [n_local, ..., k] soft assignments (rows sum to 1; any axes between
    the batch and the clusters, e.g. sub-heads, are kept) -> [..., k, k], entries summing to 1.

    Under tf.distribute the sum of outer products and the count n are all-reduced (one
    collective), so every replica holds the global batch's joint; the gradient of a SUM
    all-reduce is again one, so each replica's rows get the gradient of the global loss.
    Computed in float32, or float64 for float64 inputs: near independence (at initialisation)
    the mutual information is a small difference of logs, whose float32 round-off was 1e-5 of
    its gradient."""
    p_a, p_b = tf.convert_to_tensor(p_a), tf.convert_to_tensor(p_b)
    dtype = tf.float64 if p_a.dtype == tf.float64 else tf.float32
    p_a, p_b = tf.cast(p_a, dtype), tf.cast(p_b, dtype)
    outer_sum = tf.einsum("n...i,n...j->...ij", p_a, p_b)
    count = tf.cast(tf.shape(p_a)[0], dtype)
    outer_sum, count = _all_sum([outer_sum, count])
    joint = outer_sum / count
    return (joint + tf.linalg.matrix_transpose(joint)) / 2.0


def iic_mutual_information(p_a, p_b, eps=sys.float_info.epsilon):
    """I(z, z') = sum_ij P_ij (log P_ij - log P_i - log P_j) of the global-batch joint P
    (`iic_joint`) with marginals P_i (rows) and P_j (columns), in nats; [...] for inputs
    [n, ..., k]. As in the official code (IID_losses.py), P and its marginals are clipped below
    at eps before the logs (the marginals are summed before the clip); between 0 and log k."""
    joint = iic_joint(p_a, p_b)
    p_i = tf.reduce_sum(joint, axis=-1, keepdims=True)  # [..., k, 1]
    p_j = tf.reduce_sum(joint, axis=-2, keepdims=True)  # [..., 1, k]
    log = lambda x: tf.math.log(tf.maximum(x, eps))  # noqa: E731
    return tf.reduce_sum(joint * (log(joint) - log(p_i) - log(p_j)), axis=[-2, -1])


def iic_loss(p_a, p_b, eps=sys.float_info.epsilon):
    """IIC's loss (Ji et al. 2019, eq. 1-3, the paper's lambda = 1): -I(z, z') of the cluster
    assignments p_a, p_b [n, k] of an image and of its transformed copy over the global batch,
    averaged over any axes between the batch and the clusters (sub-heads). Every replica returns
    the global value (see `iic_joint`)."""
    return -tf.reduce_mean(iic_mutual_information(p_a, p_b, eps))


__all__ = ["sinkhorn", "swav_loss", "dino_loss", "dino_batch_center", "iic_joint", "iic_mutual_information",
           "iic_loss"]
