"""Losses of the online-clustering and self-distillation methods: SwAV's Sinkhorn-Knopp codes and
swapped prediction (Caron et al. 2020) and DINO's centred, sharpened cross-entropy (Caron et al.
2021). Plain functions on tensors, computed in float32.

Both use batch statistics (Sinkhorn's prototype marginals, DINO's centre), which are taken over
the GLOBAL batch inside a tf.distribute replica context (all-reduced sums; Sinkhorn's row
log-sum-exps gathered from every replica), so N replicas with
B/N images each compute what one device computes with B. The losses return the mean over the
LOCAL examples; the method base class's division by the replica count makes the global mean.
"""
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


__all__ = ["sinkhorn", "swav_loss", "dino_loss", "dino_batch_center"]
