"""Collapse monitors: two numbers that tell a healthy representation from a collapsed one.

- `embedding_std`: the mean over dimensions of the per-dimension standard deviation of the
  L2-normalised embeddings (BYOL / SimSiam's monitor, Chen & He 2021 figure 2): about
  1/sqrt(d) for embeddings spread over the sphere, 0 when every image maps to one point.
- `effective_rank`: exp of the entropy of the normalised eigenvalues of the covariance of the
  L2-normalised embeddings (Roy & Vetterli 2007, as in RankMe, Garrido et al. 2023): d for
  isotropic embeddings, 1 when they vary along one direction only (dimensional collapse), 0
  when they do not vary. (Of the normalised rows, so that a few large feature dimensions do
  not hide the others: the shipped relative-patch encoder measured 1.04 on raw features, 4.3
  normalised.)

Measured on 1,000 CIFAR-10 val images (pooled ResNet-18 w0.25 features): an untrained encoder
std ratio (std x sqrt(D)) 0.08, effective rank ~38; the shipped encoders 0.12-0.75 and 4-47.
"""
import numpy as np

# Below these a run is reported as collapsed: the std of a collapsed run falls by orders of
# magnitude (SimSiam without stop-gradient: to ~0), below even an untrained encoder's (0.08).
COLLAPSE_STD_RATIO = 0.02      # embedding_std * sqrt(d) below this: (near) complete collapse
COLLAPSE_EFFECTIVE_RANK = 1.5  # fewer than ~1.5 directions of variation left


def _normalised(features):
    x = np.asarray(features, np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"collapse monitors need a [N, D] array of N >= 2 embeddings, got shape {x.shape}.")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def embedding_std(features):
    """Mean over the D dimensions of the std over N samples of the L2-normalised rows."""
    return float(np.mean(np.std(_normalised(features), axis=0)))


def effective_rank(features):
    """exp(entropy) of the covariance eigenvalues, divided by their sum, of the L2-normalised
    embeddings; 0 when they do not vary at all."""
    x = _normalised(features)
    eig = np.clip(np.linalg.eigvalsh(np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1])), 0.0, None)
    total = eig.sum()
    if total <= 1e-12:
        return 0.0
    p = eig[eig > 0] / total
    return float(np.exp(-np.sum(p * np.log(p))))


def collapse_stats(features):
    """{"embedding_std", "embedding_std_ratio" (std x sqrt(D): ~1 when spread out),
    "effective_rank", "collapsed" (bool)} of a [N, D] array."""
    d = np.asarray(features).shape[-1]
    std = embedding_std(features)
    rank = effective_rank(features)
    return {"embedding_std": std, "embedding_std_ratio": std * float(np.sqrt(d)), "effective_rank": rank,
            "collapsed": bool(std * np.sqrt(d) < COLLAPSE_STD_RATIO or rank < COLLAPSE_EFFECTIVE_RANK)}


__all__ = ["embedding_std", "effective_rank", "collapse_stats", "COLLAPSE_STD_RATIO", "COLLAPSE_EFFECTIVE_RANK"]
