"""Collapse monitors against hand-computed cases and numpy written out differently."""
import numpy as np
import pytest

from zoo.eval.collapse import collapse_stats, effective_rank, embedding_std


def test_embedding_std_of_hand_made_rows():
    # Rows (1, 0) and (0, 1): each dimension is {1, 0}, std 0.5 -> mean 0.5.
    assert embedding_std(np.array([[1.0, 0.0], [0.0, 1.0]])) == pytest.approx(0.5)
    # Rows are normalised first: scaling a row changes nothing.
    assert embedding_std(np.array([[3.0, 0.0], [0.0, 0.2]])) == pytest.approx(0.5)
    # Every row the same direction: collapsed.
    assert embedding_std(np.array([[1.0, 2.0], [2.0, 4.0], [0.5, 1.0]])) == pytest.approx(0.0, abs=1e-12)


def test_isotropic_gaussian_spreads_at_one_over_sqrt_d(rng):
    d = 64
    x = rng.standard_normal((20000, d))
    assert embedding_std(x) * np.sqrt(d) == pytest.approx(1.0, abs=0.02)
    assert effective_rank(x) == pytest.approx(d, rel=0.02)


def test_effective_rank_matches_its_definition(rng):
    x = rng.standard_normal((500, 6)) * np.array([5.0, 3.0, 1.0, 0.5, 0.1, 0.01])
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    centred = u - u.mean(0)
    s = np.linalg.svd(centred, compute_uv=False) ** 2  # covariance eigenvalues up to a factor
    p = s / s.sum()
    assert effective_rank(x) == pytest.approx(np.exp(-(p * np.log(p)).sum()), rel=1e-9)
    # Rows +v and -v only: after normalisation they vary along one direction, rank 1.
    line = rng.choice([-2.0, 1.0, 3.0], size=(100, 1)) * np.array([[1.0, 2.0, 0.0]])
    assert effective_rank(line) == pytest.approx(1.0)
    assert effective_rank(np.ones((10, 4))) == 0.0


def test_collapse_flag(rng):
    healthy = collapse_stats(rng.standard_normal((1000, 32)))
    assert not healthy["collapsed"] and healthy["embedding_std_ratio"] > 0.9
    collapsed = collapse_stats(np.ones((1000, 32)) + 1e-4 * rng.standard_normal((1000, 32)))
    assert collapsed["collapsed"] and collapsed["embedding_std_ratio"] < 0.02
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        collapse_stats(np.ones((1, 4)))
