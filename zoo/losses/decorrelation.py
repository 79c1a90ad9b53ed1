"""Redundancy-reduction losses on the statistics of a batch of embeddings: Barlow Twins
(Zbontar et al. 2021) and VICReg (Bardes, Ponce, LeCun 2022).

Both are functions of per-dimension means, variances and cross-products over the batch, not
means over examples. Under tf.distribute they use the GLOBAL batch: each replica all-reduces
its sums (of z, of squared centred z, of the cross-products z_i^T z_j), so every replica holds
the statistics of the whole batch and computes the same global loss L. Every replica returns
that L: the base class divides each replica's loss by the number of replicas R and sums the
gradients, and since the gradient of a SUM all-reduce is again a SUM all-reduce, the gradient
reaching replica r's own embeddings is sum_s (1/R) dL/dz_r = dL/dz_r. So R replicas give
exactly the single-device loss and gradient (tests/test_decorrelation.py checks both).
"""
import tensorflow as tf

from zoo.losses.replicas import _replica_context


def _all_sum(values):
    """The sum over replicas of every tensor in `values` (one collective); identity outside a
    multi-replica run."""
    ctx = _replica_context()
    return values if ctx is None else ctx.all_reduce(tf.distribute.ReduceOp.SUM, values)


def _centre(z_a, z_b):
    """z_a, z_b [n, d] minus the global-batch per-dimension means; and the global batch size."""
    z_a, z_b = tf.cast(z_a, tf.float32), tf.cast(z_b, tf.float32)
    sum_a, sum_b, count = _all_sum([tf.reduce_sum(z_a, 0), tf.reduce_sum(z_b, 0),
                                    tf.cast(tf.shape(z_a)[0], tf.float32)])
    return z_a - sum_a / count, z_b - sum_b / count, count


def _sums_of_squares(c_a, c_b):
    """This replica's per-dimension sums of squares of the centred embeddings (to all-reduce)."""
    return [tf.reduce_sum(tf.square(c_a), 0), tf.reduce_sum(tf.square(c_b), 0)]


def barlow_twins_terms(z_a, z_b, eps=1e-5):
    """(on-diagonal, off-diagonal) terms of Barlow Twins: sum_i (1 - C_ii)^2 and
    sum_{i != j} C_ij^2, where C = z_a_n^T z_b_n / N is the cross-correlation of the two
    embeddings standardised per dimension over the (global) batch of N:
    z_n = (z - mean) / sqrt(var + eps), var the biased batch variance (the official code's
    BatchNorm1d(affine=False), eps 1e-5). z_a, z_b: [n, d], row i two views of one image."""
    c_a, c_b, count = _centre(z_a, z_b)
    sq_a, sq_b = _all_sum(_sums_of_squares(c_a, c_b))
    n_a = c_a * tf.math.rsqrt(sq_a / count + eps)
    n_b = c_b * tf.math.rsqrt(sq_b / count + eps)
    corr = _all_sum(tf.matmul(n_a, n_b, transpose_a=True)) / count
    diag = tf.linalg.diag_part(corr)
    on_diagonal = tf.reduce_sum(tf.square(1.0 - diag))
    off_diagonal = tf.reduce_sum(tf.square(corr)) - tf.reduce_sum(tf.square(diag))
    return on_diagonal, off_diagonal


def barlow_twins_loss(z_a, z_b, lambd=0.0051, eps=1e-5):
    """Barlow Twins (Zbontar et al. 2021, eq. 1): sum_i (1 - C_ii)^2 + lambd sum_{i != j} C_ij^2
    over the global batch (see `barlow_twins_terms`); the same value on every replica."""
    on_diagonal, off_diagonal = barlow_twins_terms(z_a, z_b, eps)
    return on_diagonal + lambd * off_diagonal


def vicreg_terms(z_a, z_b, eps=1e-4):
    """(invariance, variance, covariance) terms of VICReg over the (global) batch of N:
    - invariance: mean over the N x d entries of (z_a - z_b)^2 (MSE);
    - variance: v(z_a) + v(z_b), v(z) = 1/d sum_j max(0, 1 - sqrt(Var(z^j) + eps)), Var the
      unbiased (N - 1) batch variance of dimension j;
    - covariance: c(z_a) + c(z_b), c(z) = 1/d sum_{i != j} Cov(z)_ij^2, Cov(z) the unbiased
      covariance matrix.
    z_a, z_b: [n, d]. The same values on every replica."""
    c_a, c_b, count = _centre(z_a, z_b)
    dim = tf.cast(tf.shape(c_a)[1], tf.float32)
    sq_a, sq_b, sq_diff = _all_sum(_sums_of_squares(c_a, c_b)
                                   + [tf.reduce_sum(tf.square(tf.cast(z_a, tf.float32) - tf.cast(z_b, tf.float32)))])
    invariance = sq_diff / (count * dim)
    variance = sum(tf.reduce_mean(tf.nn.relu(1.0 - tf.sqrt(sq / (count - 1.0) + eps))) for sq in (sq_a, sq_b))
    covariance = 0.0
    for cov in _all_sum([tf.matmul(c, c, transpose_a=True) for c in (c_a, c_b)]):
        cov = cov / (count - 1.0)
        covariance += (tf.reduce_sum(tf.square(cov)) - tf.reduce_sum(tf.square(tf.linalg.diag_part(cov)))) / dim
    return invariance, variance, covariance


def vicreg_loss(z_a, z_b, sim_weight=25.0, var_weight=25.0, cov_weight=1.0, eps=1e-4):
    """VICReg (Bardes, Ponce, LeCun 2022, eq. 6): sim_weight * invariance + var_weight *
    [v(z_a) + v(z_b)] + cov_weight * [c(z_a) + c(z_b)] over the global batch (see
    `vicreg_terms`); the same value on every replica."""
    invariance, variance, covariance = vicreg_terms(z_a, z_b, eps)
    return sim_weight * invariance + var_weight * variance + cov_weight * covariance


__all__ = ["barlow_twins_terms", "barlow_twins_loss", "vicreg_terms", "vicreg_loss"]
