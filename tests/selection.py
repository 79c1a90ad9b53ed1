"""Parametrisations that keep the default suite short: every case runs under `pytest -m slow`,
a few representative ones by default."""
import pytest


def slow_except(names, keep):
    """`names` as pytest params, all but those in `keep` marked slow."""
    missing = set(keep) - set(names)
    assert not missing, f"representative cases {sorted(missing)} are not among {sorted(names)}"
    return [name if name in keep else pytest.param(name, marks=pytest.mark.slow) for name in names]


def tiny_backbone(name):
    """The backbone a method is tested on: its own default when that is a ViT (MAE drops tokens, so
    it has no ResNet form), else ResNet-18."""
    from zoo.registry import get_method
    default = get_method(name).Config.backbone
    return default if default.startswith("vit") else "resnet18"
