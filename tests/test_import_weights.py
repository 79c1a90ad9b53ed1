"""zoo.import_weights / zoo-import-weights: torchvision-layout ResNet-50 checkpoints as zoo encoders.

The reference is an independent numpy forward pass of torchvision's ResNet-50 in eval mode
(written below from torchvision's definition, not from the zoo's code), run on a random state
dict with torchvision's key names and shapes. Numerics at 64 px: the conversion does not depend
on the input size, and 64 px keeps every map size even, where Keras's "same" padding and
torchvision's differ.
"""
import functools
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import threadpoolctl

from zoo import import_weights

LIGHTLY_PYTHON = "/root/lightly-venv/bin/python"  # a venv with torch + torchvision (benchmarks/README.md)
MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])
RESNET50 = ("bottleneck", (3, 4, 6, 3), 64)  # torchvision resnet50: block, blocks per stage, base planes
RESNET18_W0125 = ("basic", (2, 2, 2, 2), 8)  # resnet18's layout with 8 base planes: small, fast tests


def torchvision_resnet_state(arch=RESNET50, seed=0):
    """A random state dict with exactly the keys and shapes of torchvision.models.resnet50()
    (or resnet18() with `base` planes instead of 64, for RESNET18_W0125)."""
    block, blocks_per_stage, base = arch
    expansion = 4 if block == "bottleneck" else 1
    rng = np.random.default_rng(seed)
    state = {}

    def conv(name, out, inp, k):
        state[f"{name}.weight"] = (rng.standard_normal((out, inp, k, k), np.float32)
                                   * np.float32(np.sqrt(2.0 / (inp * k * k))))

    def bn(name, c):
        state[f"{name}.weight"] = rng.uniform(0.5, 1.0, c).astype(np.float32)
        state[f"{name}.bias"] = rng.normal(0, 0.1, c).astype(np.float32)
        state[f"{name}.running_mean"] = rng.normal(0, 0.1, c).astype(np.float32)
        state[f"{name}.running_var"] = rng.uniform(0.5, 1.5, c).astype(np.float32)
        state[f"{name}.num_batches_tracked"] = np.array(7, np.int64)

    conv("conv1", base, 3, 7)
    bn("bn1", base)
    inplanes = base
    for stage, blocks in enumerate(blocks_per_stage, start=1):
        planes = base * 2 ** (stage - 1)
        for i in range(blocks):
            p = f"layer{stage}.{i}"
            if block == "bottleneck":
                conv(f"{p}.conv1", planes, inplanes, 1)
                bn(f"{p}.bn1", planes)
                conv(f"{p}.conv2", planes, planes, 3)
                bn(f"{p}.bn2", planes)
                conv(f"{p}.conv3", planes * 4, planes, 1)
                bn(f"{p}.bn3", planes * 4)
            else:
                conv(f"{p}.conv1", planes, inplanes, 3)
                bn(f"{p}.bn1", planes)
                conv(f"{p}.conv2", planes, planes, 3)
                bn(f"{p}.bn2", planes)
            if i == 0 and (stage > 1 or inplanes != planes * expansion):
                conv(f"{p}.downsample.0", planes * expansion, inplanes, 1)
                bn(f"{p}.downsample.1", planes * expansion)
            inplanes = planes * expansion
    state["fc.weight"] = rng.normal(0, 0.01, (1000, inplanes)).astype(np.float32)
    state["fc.bias"] = np.zeros(1000, np.float32)
    return state


@functools.lru_cache(maxsize=None)
def _cached_state(arch):
    return torchvision_resnet_state(arch)


def resnet_state(arch=RESNET50):
    """A fresh dict (shared arrays: do not modify them) of the cached random state dict."""
    return dict(_cached_state(arch))


# ---- the independent reference: torchvision's ResNet forward in eval mode, in numpy (float64) ----

def _windows(x, k, stride):
    n, h, w, c = x.shape
    oh, ow = (h - k) // stride + 1, (w - k) // stride + 1
    s = x.strides
    return np.lib.stride_tricks.as_strided(x, (n, oh, ow, k, k, c),
                                           (s[0], s[1] * stride, s[2] * stride, s[1], s[2], s[3]))


def np_conv(x, weight, stride=1, padding=0):
    """nn.Conv2d(bias=False): x [N, H, W, C], weight [O, I, kh, kw], zero padding on every side."""
    x = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    out, _, kh, kw = weight.shape
    patches = _windows(np.ascontiguousarray(x), kh, stride)  # [N, oh, ow, kh, kw, C]
    columns = np.ascontiguousarray(patches).reshape(-1, kh * kw * x.shape[-1])  # contiguous: BLAS, not a slow loop
    kernel = np.ascontiguousarray(weight.astype(np.float64).transpose(2, 3, 1, 0)).reshape(-1, out)  # rows: (kh, kw, C)
    return (columns @ kernel).reshape(*patches.shape[:3], out)


def np_bn(x, state, name, eps=1e-5):
    """nn.BatchNorm2d in eval mode: running statistics."""
    g, b, m, v = (state[f"{name}.{p}"].astype(np.float64) for p in ("weight", "bias", "running_mean", "running_var"))
    return (x - m) / np.sqrt(v + eps) * g + b


def np_maxpool(x):
    """nn.MaxPool2d(3, stride=2, padding=1): padding with -inf."""
    x = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
    return _windows(np.ascontiguousarray(x), 3, 2).max(axis=(3, 4))


def numpy_resnet_features(state, images, arch=RESNET50):
    """torchvision.models.resnet50 (or the resnet18 layout) in eval mode, fc removed: uint8
    [N, H, W, 3] -> pooled features, the images normalised as torchvision's transforms do
    (ToTensor, Normalize with the ImageNet mean / std)."""
    # one BLAS thread: on a busy 2-core machine OpenBLAS's threads wait on each other (10 s instead of 1)
    with threadpoolctl.threadpool_limits(1):
        return _numpy_resnet_features(state, images, arch)


def _numpy_resnet_features(state, images, arch):
    block, blocks_per_stage, _ = arch
    relu = lambda t: np.maximum(t, 0)  # noqa: E731
    x = (images.astype(np.float64) / 255.0 - MEAN) / STD
    x = np_maxpool(relu(np_bn(np_conv(x, state["conv1.weight"], 2, 3), state, "bn1")))
    for stage, blocks in enumerate(blocks_per_stage, start=1):
        for i in range(blocks):
            p, stride = f"layer{stage}.{i}", 2 if (i == 0 and stage > 1) else 1
            if block == "bottleneck":  # v1.5: the stride on the 3x3 conv
                y = relu(np_bn(np_conv(x, state[f"{p}.conv1.weight"]), state, f"{p}.bn1"))
                y = relu(np_bn(np_conv(y, state[f"{p}.conv2.weight"], stride, 1), state, f"{p}.bn2"))
                y = np_bn(np_conv(y, state[f"{p}.conv3.weight"]), state, f"{p}.bn3")
            else:
                y = relu(np_bn(np_conv(x, state[f"{p}.conv1.weight"], stride, 1), state, f"{p}.bn1"))
                y = np_bn(np_conv(y, state[f"{p}.conv2.weight"], 1, 1), state, f"{p}.bn2")
            shortcut = x
            if f"{p}.downsample.0.weight" in state:
                shortcut = np_bn(np_conv(x, state[f"{p}.downsample.0.weight"], stride), state, f"{p}.downsample.1")
            x = relu(y + shortcut)
    return x.mean(axis=(1, 2))


def test_random_state_dicts_have_torchvision_layout():
    # torchvision's resnet50().state_dict(): 320 entries, 25,557,032 parameters (its model card)
    state = resnet_state()
    buffers = [k for k in state if k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert len(state) == 320
    assert sum(v.size for k, v in state.items() if k not in buffers) == 25_557_032
    # torchvision's resnet18().state_dict(): 122 entries (20 convs, 20 BNs, fc)
    assert len(resnet_state(RESNET18_W0125)) == 122


def test_numpy_conv_and_pool_on_hand_computed_cases():
    x = np.arange(16, dtype=np.float64).reshape(1, 4, 4, 1)
    box = np.ones((1, 1, 3, 3))
    # 3x3 box filter, stride 2, padding 1 on a 4x4 ramp: windows centred on (0,0), (0,2), (2,0), (2,2)
    np.testing.assert_allclose(np_conv(x, box, 2, 1)[0, :, :, 0], [[0 + 1 + 4 + 5, 1 + 2 + 3 + 5 + 6 + 7],
                                                                    [4 + 5 + 8 + 9 + 12 + 13, 90]])
    np.testing.assert_allclose(np_maxpool(x)[0, :, :, 0], [[5, 7], [13, 15]])


@pytest.fixture(scope="module")
def reference():
    """(state dict, images, numpy features, converted encoder at 64 px, its info)."""
    state = resnet_state()
    images = np.random.default_rng(1).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    moco_style = {f"module.encoder_q.{k}": v for k, v in state.items()}
    moco_style.update({f"module.encoder_k.{k}": v for k, v in state.items()})  # the key encoder: ignored
    moco_style["module.encoder_q.fc.0.weight"] = np.zeros((2048, 2048), np.float32)  # MoCo v2's MLP head
    moco_style["module.queue"] = np.zeros((128, 16), np.float32)
    encoder, info = import_weights.convert({"state_dict": moco_style, "epoch": 200}, image_size=64)
    return state, images, numpy_resnet_features(state, images), encoder, info


def test_converted_features_equal_numpy_torchvision_forward(reference):
    state, images, expected, encoder, info = reference
    got = np.asarray(encoder(images))
    scale = np.abs(expected).max()
    assert info["prefix"] == "module.encoder_q." and info["depth"] == 50 and info["width"] == 1
    assert len(info["ignored"]) == 321  # module.encoder_k.* (320) and the queue
    assert "module.encoder_q.fc.0.weight" in info["dropped"]
    assert got.shape == (2, 2048) and scale > 0.1
    np.testing.assert_allclose(got, expected, atol=1e-4 * scale, rtol=0)


def test_keras_same_padding_would_not_match():
    """The reference is sensitive to the padding: the same weights in the default ("same") ResNet
    differ from it, the "torch" one does not (resnet18 layout, 8 base planes: fast)."""
    from zoo.backbones import build_backbone
    from zoo.encoder import ImageEncoder
    state = resnet_state(RESNET18_W0125)
    images = np.random.default_rng(4).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    expected = numpy_resnet_features(state, images, RESNET18_W0125)
    encoder, info = import_weights.convert(state, image_size=64)
    assert info["depth"] == 18 and info["width"] == 0.125 and info["prefix"] == ""
    np.testing.assert_allclose(np.asarray(encoder(images)), expected, atol=1e-4 * np.abs(expected).max(), rtol=0)
    same = ImageEncoder(build_backbone("resnet18", width=0.125, image_size=64, stem="imagenet"), 64)
    same.set_weights(encoder.get_weights())
    assert np.abs(np.asarray(same(images)) - expected).max() > 1e-2 * np.abs(expected).max()


@pytest.mark.parametrize("prefix", ["", "module.", "module.encoder_q.", "encoder.", "backbone.", "model.",
                                    "module.backbone."])
def test_prefix_styles_are_found(prefix):
    state = resnet_state()
    prefixed = {prefix + k: v for k, v in state.items()}
    prefixed[prefix + "projector.0.weight"] = np.zeros((8, 2048), np.float32)  # a head beside the ResNet: dropped
    selected, info = import_weights.select_resnet(prefixed)
    assert info["prefix"] == prefix
    assert set(selected) == {k for k in state if not k.startswith("fc.") and not k.endswith("num_batches_tracked")}
    assert selected["layer3.5.conv2.weight"] is state["layer3.5.conv2.weight"]
    assert prefix + "projector.0.weight" in info["dropped"] and prefix + "fc.weight" in info["dropped"]


def test_several_resnets_pick_the_evaluated_encoder_or_ask_for_a_prefix():
    state = resnet_state()
    mocov3 = {f"module.{part}.{k}": v for part in ("momentum_encoder", "base_encoder") for k, v in state.items()}
    assert import_weights.select_resnet(mocov3)[1]["prefix"] == "module.base_encoder."
    unknown = {f"{part}.{k}": v for part in ("net_a", "net_b") for k, v in state.items()}
    with pytest.raises(ValueError, match=r"several prefixes \['net_a\.', 'net_b\.'\].*--prefix"):
        import_weights.select_resnet(unknown)
    assert import_weights.select_resnet(unknown, prefix="net_b.")[1]["prefix"] == "net_b."


def test_missing_and_unexpected_tensors_are_refused_by_name():
    state = resnet_state()
    del state["layer3.1.bn2.running_var"]
    with pytest.raises(ValueError, match=r"missing 1 tensor.*layer3\.1\.bn2\.running_var"):
        import_weights.select_resnet(state)
    state = {f"module.{k}": v for k, v in resnet_state().items()}
    state["module.layer2.0.se.fc1.weight"] = np.zeros((4, 4), np.float32)
    with pytest.raises(ValueError, match=r"unexpected tensor.*'module\.'.*module\.layer2\.0\.se\.fc1\.weight"):
        import_weights.select_resnet(state)


def test_wrong_shape_is_refused_by_name(reference):
    state = dict(reference[0])
    state["layer2.0.conv2.weight"] = np.zeros((128, 64, 3, 3), np.float32)
    selected, info = import_weights.select_resnet(state)
    before = reference[3].backbone.get_layer("stem_conv").get_weights()[0].copy()
    with pytest.raises(ValueError, match=r"layer2\.0\.conv2\.weight \(128, 64, 3, 3\).*stage2_block1_conv2"):
        import_weights.load_into(reference[3], selected, info["depth"])
    np.testing.assert_array_equal(reference[3].backbone.get_layer("stem_conv").get_weights()[0], before)


def test_no_resnet_and_non_tensor_entries_are_refused():
    with pytest.raises(ValueError, match="no torchvision ResNet found"):
        import_weights.select_resnet({"blocks.0.attn.qkv.weight": np.zeros((3, 3), np.float32)})
    with pytest.raises(ValueError, match="not tensors.*'conv1.weight'"):
        import_weights.convert({"conv1.weight": "not an array"})


def test_pth_without_torch_names_pip_install_torch(tmp_path, monkeypatch):
    path = tmp_path / "r50.pth"
    path.write_bytes(b"\x80\x02}q\x00.")
    monkeypatch.setitem(sys.modules, "torch", None)  # as if torch were not installed
    with pytest.raises(ValueError, match="pip install torch"):
        import_weights.read_state_dict(path)
    other = tmp_path / "r50.npz"
    other.write_bytes(b"x")
    with pytest.raises(ValueError, match="unknown checkpoint format.*safetensors"):
        import_weights.read_state_dict(other)


class _FakeTensor:
    """Enough of a torch tensor for read_state_dict: detach().cpu().float().numpy()."""

    def __init__(self, array):
        self.array = array

    def detach(self):
        return self

    def cpu(self):
        return self

    def float(self):
        return _FakeTensor(self.array.astype(np.float32))

    def numpy(self):
        return self.array


def test_pth_is_read_only_with_weights_only_torch_load(tmp_path, monkeypatch):
    """.pth goes through torch.load(path, map_location="cpu", weights_only=True) (a stand-in
    torch records the call), tensors become float32 arrays, and a refusal by torch's safe
    unpickler becomes a ValueError saying why."""
    import types
    calls = []
    fake = types.ModuleType("torch")

    def load(path, **kwargs):
        calls.append((path, kwargs))
        if path.endswith("evil.pth"):
            raise RuntimeError("Weights only load failed ... Unsupported global: GLOBAL os.system")
        return {"state_dict": {"conv1.weight": _FakeTensor(np.ones((8, 3, 7, 7), np.float16))}, "epoch": 3}

    fake.load = load
    monkeypatch.setitem(sys.modules, "torch", fake)
    good, evil = tmp_path / "ok.pth.tar", tmp_path / "evil.pth"
    good.write_bytes(b"x")
    evil.write_bytes(b"x")
    state = import_weights.read_state_dict(good)
    assert calls[0] == (str(good), {"map_location": "cpu", "weights_only": True})
    assert list(state) == ["conv1.weight"] and state["conv1.weight"].dtype == np.float32
    with pytest.raises(ValueError, match=r"evil\.pth: torch\.load\(weights_only=True\) refused.*for safety"):
        import_weights.read_state_dict(evil)


def test_cli_reports_a_bad_checkpoint_as_one_error_line(tmp_path, capsys):
    from export.import_cli import main
    from safetensors.numpy import save_file
    state = resnet_state(RESNET18_W0125)
    del state["layer4.1.conv2.weight"]
    save_file(state, str(tmp_path / "r18.safetensors"))
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "r18.safetensors"), "--method", "simclr", "--name", "r18", "--license", "MIT",
              "--to", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "missing 1 tensor(s) of torchvision's ResNet-18: layer4.1.conv2.weight" in err
    assert not (tmp_path / "out" / "r18").exists()


def _import_and_reload(arch, tmp_path):
    """Save the random state dict under "backbone." as safetensors, import it with
    import_checkpoint, check the folder's metadata and card, and compare zoo.load's features at
    64 px with the numpy reference."""
    from safetensors.numpy import save_file

    import zoo
    from export.import_cli import import_checkpoint
    state = resnet_state(arch)
    images = np.random.default_rng(2).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    expected = numpy_resnet_features(state, images, arch)
    path = tmp_path / "barlow_r50.safetensors"
    save_file({f"backbone.{k}": v for k, v in state.items()}, str(path))
    folder = import_checkpoint(path, "barlow_twins", "barlow_twins_resnet_imagenet", "MIT",
                               to=tmp_path / "published", url="https://example.org/r50.pth", saved_model=False)
    meta = json.load(open(os.path.join(folder, "metadata.json")))
    assert meta["backbone"]["padding"] == "torch" and meta["backbone"]["stem"] == "imagenet"
    assert meta["input"]["image_size"] == 224 and meta["input"]["eval_transform"] == {
        "resize_shorter_side": 256, "center_crop": 224}
    assert meta["imported"]["sha256"] == zoo.hub.sha256(path) and meta["imported"]["license"] == "MIT"
    assert meta["imported"]["prefix"] == "backbone."
    card = open(os.path.join(folder, "README.md")).read()
    assert "license_name: MIT" in card and "barlow_r50.safetensors" in card and meta["imported"]["sha256"] in card
    loaded = zoo.load(folder, input_shape=(64, 64, 3))
    np.testing.assert_allclose(np.asarray(loaded(images)), expected, atol=1e-4 * np.abs(expected).max(), rtol=0)
    return meta


def test_safetensors_import_writes_a_folder_zoo_load_reads(tmp_path):
    # torchvision's resnet18 layout with 8 base planes: the same code path as ResNet-50, 1000x smaller
    meta = _import_and_reload(RESNET18_W0125, tmp_path)
    assert meta["backbone"] == {"name": "resnet18", "width": 0.125, "stem": "imagenet", "padding": "torch"}


@pytest.mark.slow
def test_resnet50_safetensors_import_zoo_load(tmp_path):
    meta = _import_and_reload(RESNET50, tmp_path)
    assert meta["backbone"] == {"name": "resnet50", "width": 1.0, "stem": "imagenet", "padding": "torch"}


def test_default_backbone_has_no_padding_layers():
    """padding="torch" is opt-in: the default ResNet keeps Keras's "same" padding and its layers."""
    import keras

    from zoo.backbones import build_backbone
    default = build_backbone("resnet18", width=0.125, image_size=224, stem="imagenet")
    torch_style = build_backbone("resnet18", width=0.125, image_size=224, stem="imagenet", padding="torch")
    assert not [layer for layer in default.layers if isinstance(layer, keras.layers.ZeroPadding2D)]
    assert default.get_layer("stage2_block1_conv1").padding == "same"
    assert torch_style.get_layer("stage2_block1_conv1").padding == "valid"
    assert torch_style.get_layer("stage2_block1_conv1_pad").padding == ((1, 1), (1, 1))
    assert [w.path for w in default.weights] == [w.path for w in torch_style.weights]
    with pytest.raises(ValueError, match="padding='reflect'.*'same'.*'torch'"):
        build_backbone("resnet18", padding="reflect")


_TORCH_SCRIPT = r"""
import sys, numpy as np, torch, torchvision
torch.manual_seed(0)
model = torchvision.models.resnet50().eval()
with torch.no_grad():  # non-trivial BN statistics, so eval mode matters
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1); m.running_var.uniform_(0.5, 1.5)
            m.weight.uniform_(0.5, 1.0); m.bias.normal_(0, 0.1)
images = np.random.default_rng(3).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
x = (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255 - torch.tensor([0.485, 0.456, 0.406])[:, None, None]) \
    / torch.tensor([0.229, 0.224, 0.225])[:, None, None]
model.fc = torch.nn.Identity()
with torch.no_grad():
    features = model(x).numpy()
out = sys.argv[1]
torch.save({"state_dict": {"module." + k: v for k, v in model.state_dict().items()}}, out + "/r50.pth.tar")
np.savez(out + "/tensors.npz", **model.state_dict())
np.save(out + "/images.npy", images); np.save(out + "/features.npy", features)
"""


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists(LIGHTLY_PYTHON), reason=f"needs torch + torchvision in {LIGHTLY_PYTHON}")
def test_real_torchvision_resnet50_matches(tmp_path):
    """A real torchvision resnet50 (random init, eval mode), run by torch in another venv: its
    features equal the converted encoder's (from .pth if torch is importable here, else from
    the same tensors as safetensors)."""
    subprocess.run([LIGHTLY_PYTHON, "-c", _TORCH_SCRIPT, str(tmp_path)], check=True, timeout=300)
    images, expected = np.load(tmp_path / "images.npy"), np.load(tmp_path / "features.npy")
    try:
        import torch  # noqa: F401
        path = tmp_path / "r50.pth.tar"
    except ImportError:
        from safetensors.numpy import save_file
        path = tmp_path / "r50.safetensors"
        save_file(dict(np.load(tmp_path / "tensors.npz")), str(path))
    encoder, info = import_weights.convert(path, image_size=64)
    assert info["depth"] == 50
    np.testing.assert_allclose(np.asarray(encoder(images)), expected, atol=1e-4 * np.abs(expected).max(), rtol=0)


@pytest.mark.slow
def test_cli_writes_export_with_saved_model(tmp_path):
    from safetensors.numpy import save_file

    import zoo
    from export.import_cli import main
    path = tmp_path / "dino_r50.safetensors"
    save_file(resnet_state(), str(path))
    main([str(path), "--method", "dino", "--name", "dino_resnet50_imagenet", "--license", "Apache-2.0",
          "--to", str(tmp_path / "out")])
    folder = tmp_path / "out" / "dino_resnet50_imagenet"
    assert (folder / "saved_model" / "saved_model.pb").exists()
    assert zoo.load(str(folder)).metadata["imported"]["file"] == "dino_r50.safetensors"


@pytest.mark.slow
def test_imported_model_card_code_runs(tmp_path):
    """The card's loading code runs as written on an imported encoder (resnet18 layout, 8 base
    planes). Only up to its fine-tune part: model.fit at 224 px aborts TensorFlow 2.21 on this
    machine ("munmap_chunk(): invalid pointer") for any ImageNet-stem ResNet, imported or not."""
    import re

    from export.import_cli import import_checkpoint
    from safetensors.numpy import save_file
    path = tmp_path / "r18.safetensors"
    save_file(resnet_state(RESNET18_W0125), str(path))
    folder = import_checkpoint(path, "simclr", "simclr_r18_imported", "Apache-2.0", to=tmp_path, saved_model=False)
    card = open(os.path.join(folder, "README.md")).read()
    assert "Apache-2.0" in card and "Credit and cite them" in card
    code = re.search(r"```python\n(.*?)```", card, re.S).group(1).split("# fine-tune")[0]
    scope = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert scope["features"].shape == (2, 64)
