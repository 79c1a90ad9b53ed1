"""Parametrisations that keep the default suite short: every case runs under `pytest -m slow`,
a few representative ones by default."""
import pytest


def slow_except(names, keep):
    """`names` as pytest params, all but those in `keep` marked slow."""
    missing = set(keep) - set(names)
    assert not missing, f"representative cases {sorted(missing)} are not among {sorted(names)}"
    return [name if name in keep else pytest.param(name, marks=pytest.mark.slow) for name in names]
