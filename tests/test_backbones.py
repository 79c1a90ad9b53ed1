"""zoo.backbones against independent references: torchvision's published parameter counts
(minus the fc layer), hand-computed stem differences, hand-derived feature-map sizes, and a
numpy (x - mean) / std for the built-in normalisation."""
import keras
import numpy as np
import pytest

from zoo.backbones import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    STAGE_NAMES,
    build_backbone,
    feature_maps,
    resolve_stem,
    resnet,
)


def _trainable(model):
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


# torchvision: resnet18 11,689,512 / resnet34 21,797,672 / resnet50 25,557,032 parameters,
# of which fc is 512 * 1000 + 1000 = 513,000 (resnet18/34) or 2048 * 1000 + 1000 = 2,049,000.
TORCHVISION_NO_FC = {18: 11_689_512 - 513_000, 34: 21_797_672 - 513_000, 50: 25_557_032 - 2_049_000}
# The CIFAR stem replaces the 7x7x3x64 stem conv with a 3x3x3x64 one: (49 - 9) * 3 * 64 fewer weights.
STEM_DIFFERENCE = (7 * 7 - 3 * 3) * 3 * 64


def test_reference_numbers():
    assert TORCHVISION_NO_FC == {18: 11_176_512, 34: 21_284_672, 50: 23_508_032}
    assert STEM_DIFFERENCE == 7_680


def test_resnet18_cifar_parameter_count():
    model = resnet(18, width=1.0, stem="cifar")
    assert _trainable(model) == 11_168_832 == TORCHVISION_NO_FC[18] - STEM_DIFFERENCE
    assert model.output.shape == (None, 512)


def test_resnet18_imagenet_stem_differs_only_in_the_stem_conv():
    cifar, imagenet = resnet(18, stem="cifar"), resnet(18, stem="imagenet")
    assert _trainable(imagenet) - _trainable(cifar) == STEM_DIFFERENCE
    assert _trainable(imagenet) == TORCHVISION_NO_FC[18]
    assert tuple(cifar.get_layer("stem_conv").kernel.shape) == (3, 3, 3, 64)
    assert tuple(imagenet.get_layer("stem_conv").kernel.shape) == (7, 7, 3, 64)
    # Every other weight has the same shape in both.
    shapes = lambda m: sorted((w.path, tuple(w.shape)) for w in m.weights  # noqa: E731
                              if not w.path.startswith("stem_conv"))
    assert shapes(cifar) == shapes(imagenet)


def test_resnet34_imagenet_parameter_count():
    model = build_backbone("resnet34", image_size=224)  # "auto" -> ImageNet stem at 224 px
    assert _trainable(model) == 21_284_672 == TORCHVISION_NO_FC[34]
    assert model.output.shape == (None, 512)


def test_resnet50_imagenet_parameter_count():
    model = build_backbone("resnet50", stem="imagenet")
    assert _trainable(model) == 23_508_032 == TORCHVISION_NO_FC[50]
    assert model.output.shape == (None, 2048)
    # Non-trainable: BN moving mean/variance, 2 per BN channel. BN channels by hand: stem 64;
    # stage1 3 * (64 + 64 + 256) + 256 = 1,408; stage2 4 * (128 + 128 + 512) + 512 = 3,584;
    # stage3 6 * (256 + 256 + 1024) + 1024 = 10,240; stage4 3 * (512 + 512 + 2048) + 2048 = 11,264;
    # total 26,560 -> 53,120 (the normalisation layer's own statistics are left out).
    bn_stats = sum(int(np.prod(w.shape)) for w in model.non_trainable_weights
                   if not w.path.startswith("normalize"))
    assert bn_stats == 53_120


@pytest.mark.parametrize("name, width, dim", [("resnet18", 0.25, 128), ("resnet50", 0.25, 512),
                                              ("resnet18", 0.125, 64), ("resnet34", 0.125, 64)])
def test_width_multiplier_output_dim(name, width, dim):
    model = build_backbone(name, width=width)
    assert model.output.shape == (None, dim)


def test_small_width_forward_any_input_size(rng):
    model = build_backbone("resnet18", width=0.125)
    assert tuple(model.input.shape) == (None, None, None, 3)
    for size in (16, 24, 40):
        out = model(rng.uniform(size=(2, size, size, 3)).astype(np.float32), training=False)
        assert tuple(out.shape) == (2, 64)
        assert np.all(np.isfinite(np.asarray(out)))
        assert np.all(np.asarray(out) >= 0)  # global average of ReLU outputs
    out = model(rng.uniform(size=(1, 20, 28, 3)).astype(np.float32), training=False)  # non-square
    assert tuple(out.shape) == (1, 64)


def test_feature_maps_cifar_stem_32px(rng):
    model = build_backbone("resnet18", width=0.125, image_size=32)
    maps = feature_maps(model)
    outs = maps(rng.uniform(size=(2, 32, 32, 3)).astype(np.float32), training=False)
    sizes = [tuple(o.shape) for o in outs]
    # Channels: max(8, round(c / 8)) for c in 64, 128, 256, 512.
    assert sizes == [(2, 32, 32, 8), (2, 32, 32, 8), (2, 16, 16, 16), (2, 8, 8, 32), (2, 4, 4, 64)]


def test_feature_maps_share_weights_with_backbone(rng):
    model = build_backbone("resnet18", width=0.125, image_size=32)
    maps = feature_maps(model, names=("stage2", "stage4"))
    x = rng.uniform(size=(2, 32, 32, 3)).astype(np.float32)
    stage2, stage4 = maps(x, training=False)
    assert tuple(stage2.shape) == (2, 16, 16, 16)
    np.testing.assert_allclose(np.asarray(stage4).mean(axis=(1, 2)), np.asarray(model(x, training=False)),
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="stage5"):
        feature_maps(model, names=("stage5",))


def test_feature_maps_imagenet_stem_64px(rng):
    model = build_backbone("resnet18", width=0.125, stem="imagenet")
    outs = feature_maps(model)(rng.uniform(size=(1, 64, 64, 3)).astype(np.float32), training=False)
    # "stem" is the 7x7 stride-2 conv's output, BEFORE the stride-2 max-pool: 64 -> 32; the pool
    # then gives 16 for stage1, and stages 2-4 halve it: 8, 4, 2.
    assert [tuple(o.shape)[1:3] for o in outs] == [(32, 32), (16, 16), (8, 8), (4, 4), (2, 2)]
    assert STAGE_NAMES == ("stem", "stage1", "stage2", "stage3", "stage4")


def test_resolve_stem():
    assert resolve_stem("auto", 32) == "cifar"
    assert resolve_stem("auto", 64) == "cifar"
    assert resolve_stem("auto", 95) == "cifar"
    assert resolve_stem("auto", 96) == "imagenet"
    assert resolve_stem("auto", 224) == "imagenet"
    assert resolve_stem("cifar", 224) == "cifar"
    assert resolve_stem("imagenet", 32) == "imagenet"
    stem_kernel = lambda size: tuple(  # noqa: E731
        build_backbone("resnet18", width=0.125, image_size=size).get_layer("stem_conv").kernel.shape)[:2]
    assert stem_kernel(96) == (7, 7)
    assert stem_kernel(64) == (3, 3)


def test_unknown_backbone_suggests_closest():
    with pytest.raises(ValueError, match="Did you mean 'resnet18'"):
        build_backbone("resnet19")
    with pytest.raises(ValueError, match="Did you mean 'resnet50'"):
        build_backbone("resnet05")
    with pytest.raises(ValueError) as info:
        build_backbone("vit")
    assert "Did you mean" not in str(info.value) and "resnet18" in str(info.value)


def test_invalid_resnet_arguments():
    with pytest.raises(ValueError, match="depth"):
        resnet(101)
    with pytest.raises(ValueError, match="stem"):
        resnet(18, stem="tiny")
    with pytest.raises(ValueError, match="width"):
        resnet(18, width=0)


@pytest.mark.parametrize("mean, std", [(IMAGENET_MEAN, IMAGENET_STD), ((0.5, 0.25, 0.1), (0.2, 0.3, 0.4))])
def test_normalisation_layer_is_x_minus_mean_over_std(rng, mean, std):
    model = build_backbone("resnet18", width=0.125, mean=mean, std=std)
    cut = keras.Model(model.input, model.get_layer("normalize").output)
    x = rng.uniform(size=(2, 5, 7, 3)).astype(np.float32)
    expected = (x - np.array(mean, np.float32)) / np.array(std, np.float32)
    np.testing.assert_allclose(np.asarray(cut(x)), expected, rtol=1e-5, atol=1e-5)
    # It is the model's first layer after the input, and it is not trained.
    assert model.layers[1].name == "normalize"
    assert not model.get_layer("normalize").trainable_weights


def test_sync_bn_flag():
    plain = build_backbone("resnet18", width=0.125)
    synced = build_backbone("resnet18", width=0.125, sync_bn=True)
    bns = lambda m: [l for l in m.layers if isinstance(l, keras.layers.BatchNormalization)]  # noqa: E731
    assert len(bns(plain)) == len(bns(synced)) == 1 + 2 * 8 + 3  # stem, 2 per block, 3 shortcuts
    assert not any(l.synchronized for l in bns(plain))
    assert all(l.synchronized for l in bns(synced))
    assert all(abs(l.momentum - 0.9) < 1e-9 and abs(l.epsilon - 1e-5) < 1e-12 for l in bns(plain))
