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
                   mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """Build a named backbone. stem="auto" picks the CIFAR stem below 96 px, else ImageNet's.
    For a ViT, `width` scales the embedding dimension and `stem` / `sync_bn` do not apply."""
    if name not in BACKBONES:
        close = difflib.get_close_matches(name, BACKBONES, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"Unknown backbone {name!r}; available: {sorted(BACKBONES)}.{hint}")
    if name in VIT_SPECS:
        return vision_transformer(VIT_SPECS[name], width=width, image_size=image_size, mean=mean, std=std,
                                  name=f"{name}_w{width:g}".replace(".", ""))
    return resnet(BACKBONES[name], width=width, stem=resolve_stem(stem, image_size), image_size=None, mean=mean, std=std,
                  sync_bn=sync_bn)


__all__ = ["build_backbone", "resolve_stem", "feature_maps", "resnet", "vision_transformer", "is_vit", "BACKBONES",
           "STAGE_NAMES", "IMAGENET_MEAN", "IMAGENET_STD"]
