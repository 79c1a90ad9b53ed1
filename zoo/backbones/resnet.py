"""ResNet-18/34/50 (He et al., CVPR 2016) with a CIFAR or an ImageNet stem and a width multiplier.

The backbone takes float images in [0, 1] (normalisation by mean/std is its first layer, so
every exported encoder carries its own preprocessing) and returns globally pooled features.
Intermediate maps are reachable by name: "stem", "stage1" ... "stage4" (see `feature_maps`).
"""
import keras
from keras import layers

from zoo.color import RgbToLightness

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# depth -> (block type, blocks per stage)
_SPECS = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
}
STAGE_NAMES = ("stem", "stage1", "stage2", "stage3", "stage4")


def _conv(filters, kernel, stride, name, padding="same"):
    """A bias-free convolution. padding="torch": a strided k x k conv (k > 1) pads k // 2 zeros on
    every side first (ZeroPadding2D "{name}_pad", then "valid"), as torchvision does; Keras's
    "same" pads an even-sized input only at the bottom / right, which shifts the sampled grid."""
    explicit = padding == "torch" and stride > 1 and kernel > 1
    conv = layers.Conv2D(filters, kernel, strides=stride, padding="valid" if explicit else "same", use_bias=False,
                         kernel_initializer="he_normal", name=name)
    if not explicit:
        return conv
    pad = layers.ZeroPadding2D(kernel // 2, name=f"{name}_pad")
    return lambda x: conv(pad(x))


def _bn(name, sync):
    # momentum 0.9 (PyTorch's 0.1): short CPU runs need statistics that keep up with training.
    return layers.BatchNormalization(momentum=0.9, epsilon=1e-5, synchronized=sync, name=name)


def _basic_block(x, filters, stride, name, sync, padding="same"):
    shortcut = x
    y = _conv(filters, 3, stride, f"{name}_conv1", padding)(x)
    y = layers.ReLU(name=f"{name}_relu1")(_bn(f"{name}_bn1", sync)(y))
    y = _bn(f"{name}_bn2", sync)(_conv(filters, 3, 1, f"{name}_conv2")(y))
    if stride != 1 or x.shape[-1] != filters:
        shortcut = _bn(f"{name}_down_bn", sync)(_conv(filters, 1, stride, f"{name}_down_conv")(x))
    return layers.ReLU(name=f"{name}_out")(layers.Add(name=f"{name}_add")([y, shortcut]))


def _bottleneck_block(x, filters, stride, name, sync, padding="same"):
    # the stride sits on the 3x3 conv (torchvision's "ResNet v1.5"), not on the first 1x1
    out = filters * 4
    shortcut = x
    y = layers.ReLU(name=f"{name}_relu1")(_bn(f"{name}_bn1", sync)(_conv(filters, 1, 1, f"{name}_conv1")(x)))
    y = _conv(filters, 3, stride, f"{name}_conv2", padding)(y)
    y = layers.ReLU(name=f"{name}_relu2")(_bn(f"{name}_bn2", sync)(y))
    y = _bn(f"{name}_bn3", sync)(_conv(out, 1, 1, f"{name}_conv3")(y))
    if stride != 1 or x.shape[-1] != out:
        shortcut = _bn(f"{name}_down_bn", sync)(_conv(out, 1, stride, f"{name}_down_conv")(x))
    return layers.ReLU(name=f"{name}_out")(layers.Add(name=f"{name}_add")([y, shortcut]))


def resnet(depth=18, width=1.0, stem="cifar", image_size=None, mean=IMAGENET_MEAN, std=IMAGENET_STD,
           sync_bn=False, name=None, in_channels=3, rgb_input=True, padding="same"):
    """Build a ResNet backbone as a functional `keras.Model`: [N, H, W, 3] in [0, 1] -> [N, D].

    stem="cifar": 3x3 conv, stride 1, no max-pool (for 32-64 px images);
    stem="imagenet": 7x7 conv stride 2 + 3x3 max-pool. `width` multiplies every channel count
    (width 0.25 -> 16/32/64/128 channels for ResNet-18). `image_size=None` accepts any size.
    `in_channels`: what the first convolution sees, 3 (RGB) or 1 (CIE lightness L / 100, for
    colorization); `mean` / `std` then have one value per channel. With in_channels=1 the model
    still takes RGB images and converts them itself (an `RgbToLightness` layer, "rgb_to_lightness",
    first) unless `rgb_input=False`: then it takes the [N, H, W, 1] lightness directly (the same
    layers and weights otherwise).
    `padding="torch"` pads every strided convolution and the max-pool symmetrically, as
    torchvision's ResNet does (for its checkpoints, zoo.import_weights); the default "same" is
    Keras's padding, which the zoo's own encoders were trained with. Both have the same weights.
    """
    if depth not in _SPECS:
        raise ValueError(f"ResNet depth {depth} is not supported; choose one of {sorted(_SPECS)}.")
    if stem not in ("cifar", "imagenet"):
        raise ValueError(f"stem={stem!r} is not supported; choose 'cifar' or 'imagenet'.")
    if width <= 0:
        raise ValueError(f"width must be > 0, got {width}.")
    if padding not in ("same", "torch"):
        raise ValueError(f"padding={padding!r} is not supported; choose 'same' (Keras) or 'torch' (torchvision's "
                         "symmetric padding, for imported checkpoints).")
    if in_channels not in (1, 3) or len(mean) != in_channels or len(std) != in_channels:
        raise ValueError(f"in_channels={in_channels} with {len(mean)} mean and {len(std)} std values: need "
                         "in_channels 3 (RGB) or 1 (lightness) and one mean and one std value per channel, e.g. "
                         "in_channels=1, mean=(0.5,), std=(0.25,).")
    block_type, blocks = _SPECS[depth]
    block = _basic_block if block_type == "basic" else _bottleneck_block
    channels = [max(8, int(round(c * width))) for c in (64, 128, 256, 512)]

    lightness_from_rgb = in_channels == 1 and rgb_input
    inputs = keras.Input((image_size, image_size, 3 if lightness_from_rgb else in_channels), name="images")
    x = RgbToLightness(name="rgb_to_lightness")(inputs) if lightness_from_rgb else inputs
    x = layers.Normalization(mean=list(mean), variance=[s * s for s in std], name="normalize")(x)
    if stem == "cifar":
        x = _conv(channels[0], 3, 1, "stem_conv")(x)
    else:
        x = _conv(channels[0], 7, 2, "stem_conv", padding)(x)
    x = layers.ReLU(name="stem_out")(_bn("stem_bn", sync_bn)(x))
    if stem == "imagenet" and padding == "torch":
        # torchvision's MaxPool2d(3, 2, padding=1) pads with -inf; after the ReLU zeros are the same
        x = layers.ZeroPadding2D(1, name="stem_pool_pad")(x)
        x = layers.MaxPooling2D(3, 2, padding="valid", name="stem_pool")(x)
    elif stem == "imagenet":
        x = layers.MaxPooling2D(3, 2, padding="same", name="stem_pool")(x)
    for stage, (filters, n) in enumerate(zip(channels, blocks), start=1):
        for i in range(n):
            stride = 2 if (i == 0 and stage > 1) else 1
            x = block(x, filters, stride, f"stage{stage}_block{i + 1}", sync_bn, padding)
        x = layers.Identity(name=f"stage{stage}_out")(x)
    features = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    model_name = name or f"resnet{depth}_w{width:g}".replace(".", "")
    return keras.Model(inputs, features, name=model_name)


def feature_maps(backbone, names=STAGE_NAMES):
    """A model from the backbone's input to its named intermediate maps (shared weights)."""
    unknown = [n for n in names if n not in STAGE_NAMES]
    if unknown:
        raise ValueError(f"Unknown feature map(s) {unknown}; available: {list(STAGE_NAMES)}.")
    outputs = [backbone.get_layer(f"{n}_out").output for n in names]
    return keras.Model(backbone.input, outputs, name=f"{backbone.name}_maps")
