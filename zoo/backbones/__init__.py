"""Backbones: image -> pooled features. `build_backbone(name, ...)` is the one entry point."""
import difflib

from zoo.backbones.resnet import IMAGENET_MEAN, IMAGENET_STD, STAGE_NAMES, feature_maps, resnet
from zoo.backbones.vit import VIT_SPECS, is_vit, vision_transformer

# name -> ResNet depth, or a ViTSpec (zoo.backbones.vit: "vit_tiny" for 32 px, the /16 ones for 224 px)
BACKBONES = {"resnet18": 18, "resnet34": 34, "resnet50": 50, **VIT_SPECS}


def resolve_stem(stem, image_size):
    """"auto" -> the CIFAR stem (3x3, stride 1, no max-pool) below 96 px, else ImageNet's."""
    if stem == "auto":
        return "cifar" if image_size < 96 else "imagenet"
    return stem


def build_backbone(name="resnet18", width=1.0, image_size=32, stem="auto", sync_bn=False,
                   mean=IMAGENET_MEAN, std=IMAGENET_STD, in_channels=None, padding="same"):
    """Build a named backbone. stem="auto" picks the CIFAR stem below 96 px, else ImageNet's.
    For a ViT, `width` scales the embedding dimension and `stem` / `sync_bn` do not apply.
    `in_channels` (ResNets): 3 (RGB) or 1 (the network sees only CIE lightness; it still takes
    RGB images and converts them, see `resnet`); None: one per `mean` value, so a method whose
    config has a one-value mean / std (colorization) gets a lightness network.
    `padding` (ResNets): "same" (Keras), or "torch" (torchvision's symmetric padding, for imported checkpoints)."""
    in_channels = len(mean) if in_channels is None else in_channels
    if name not in BACKBONES:
        close = difflib.get_close_matches(name, BACKBONES, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"Unknown backbone {name!r}; available: {sorted(BACKBONES)}.{hint}")
    if name in VIT_SPECS:
        if in_channels != 3:
            raise ValueError(f"Backbone {name!r} takes RGB only (in_channels=3), got in_channels={in_channels} "
                             f"(mean {tuple(mean)}); use a ResNet backbone for a lightness-only network.")
        return vision_transformer(VIT_SPECS[name], width=width, image_size=image_size, mean=mean, std=std,
                                  name=f"{name}_w{width:g}".replace(".", ""))
    return resnet(BACKBONES[name], width=width, stem=resolve_stem(stem, image_size), image_size=None, mean=mean, std=std,
                  sync_bn=sync_bn, in_channels=in_channels, padding=padding)


__all__ = ["build_backbone", "resolve_stem", "feature_maps", "resnet", "vision_transformer", "is_vit", "BACKBONES",
           "STAGE_NAMES", "IMAGENET_MEAN", "IMAGENET_STD"]
