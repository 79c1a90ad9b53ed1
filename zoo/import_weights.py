"""Import ResNet checkpoints published in torchvision's layout as zoo encoders.

Most self-supervised ImageNet ResNet-50s (MoCo, SwAV, DINO, Barlow Twins, VICReg, BYOL and
SimCLR ports, ...) are PyTorch state dicts with torchvision's key names (`conv1.weight`,
`layer1.0.conv1.weight`, `layer1.0.downsample.0.weight`, ...), often under a prefix
(`module.`, `module.encoder_q.`, `backbone.`, ...) and beside projection heads. This module
reads such a file (`.safetensors` through safetensors' numpy API; `.pth` / `.pth.tar` / `.pt`
through `torch.load(weights_only=True)` when torch is installed), picks the prefix that holds
the ResNet, refuses missing, unexpected or misshapen tensors by name, and loads the tensors into
the zoo's ResNet built with `padding="torch"` (torchvision's symmetric padding), so its features
equal torchvision's. `export.import_cli.import_checkpoint` (the `zoo-import-weights` command)
writes the result as an export folder that `zoo.load(DIR)` loads.

    encoder, info = zoo.import_weights.convert("dino_resnet50.pth")
"""
import os

import numpy as np

from zoo.backbones.resnet import IMAGENET_MEAN, IMAGENET_STD

# torchvision's ResNets: depth -> (block type, blocks per stage)
TORCHVISION_SPECS = {18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)), 50: ("bottleneck", (3, 4, 6, 3))}
# When several prefixes hold a full ResNet (MoCo keeps the query and the key encoder, MoCo v3 the
# base and the momentum encoder), the first of these wins: the encoder the authors evaluate.
PREFERRED_PREFIXES = ("", "module.", "module.encoder_q.", "encoder_q.", "module.base_encoder.", "base_encoder.",
                      "module.encoder.", "encoder.",
                      "module.backbone.", "backbone.", "model.", "module.model.", "online_network.encoder.",
                      "teacher.backbone.", "teacher.")
# Sub-modules beside the ResNet under the same prefix that are not part of the encoder: the
# classifier and the pre-training heads (projection MLPs, predictors, prototypes).
HEAD_PREFIXES = ("fc.", "head.", "heads.", "projector.", "projection.", "projection_head.", "prediction_head.",
                 "predictor.", "prototypes.", "classifier.")
WRAPPER_KEYS = ("state_dict", "model")  # {"state_dict": {...}, "epoch": ...} as training scripts save them
PYTORCH_EXTENSIONS = (".pth", ".pth.tar", ".pt")
# How torchvision's ImageNet models are evaluated: resize the shorter side to 256, centre-crop 224,
# normalise with the ImageNet mean / std.
IMAGENET_EVAL = {"image_size": 224, "resize": 256, "crop": "center", "mean": list(IMAGENET_MEAN),
                 "std": list(IMAGENET_STD)}
_BN_PARTS = ("weight", "bias", "running_mean", "running_var")  # -> gamma, beta, moving_mean, moving_variance


def read_state_dict(path):
    """{name: float32 numpy array} from a `.safetensors` file or a PyTorch `.pth` / `.pth.tar` /
    `.pt` file (safe loading only: `torch.load(weights_only=True)`, which refuses pickled
    objects other than tensors and plain containers). Unwraps {"state_dict": ...} / {"model": ...}."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such checkpoint file.")
    lower = path.lower()
    if lower.endswith(".safetensors"):
        from safetensors.numpy import load_file
        try:
            raw = load_file(path)
        except Exception as e:  # a truncated file, a bfloat16 tensor numpy cannot hold, ...
            raise ValueError(f"{path}: cannot read it as safetensors ({type(e).__name__}: {e}).") from e
    elif lower.endswith(PYTORCH_EXTENSIONS):
        raw = _torch_load(path)
    else:
        raise ValueError(f"{path}: unknown checkpoint format; expected a .safetensors file or a PyTorch "
                         f"{' / '.join(PYTORCH_EXTENSIONS)} file (torchvision ResNet state dict).")
    return _as_numpy(unwrap(raw, path), path)


def _torch_load(path):
    try:
        import torch
    except ImportError as e:
        raise ValueError(f"{path}: reading a PyTorch checkpoint needs torch, which is not installed: "
                         "pip install torch (the CPU wheel is enough), or convert the file to .safetensors "
                         "where torch is installed.") from e
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # weights_only refuses arbitrary pickled objects with an UnpicklingError
        raise ValueError(f"{path}: torch.load(weights_only=True) refused or failed to read it ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''}). Only state dicts of tensors are read; "
                         "a file holding other pickled objects is not loaded, for safety.") from e


def unwrap(checkpoint, where="checkpoint"):
    """The state dict inside a training script's checkpoint: {"state_dict": ...} or {"model": ...}
    (nested wrappers too), else the dict itself."""
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{where}: holds a {type(checkpoint).__name__}, expected a state dict {{name: tensor}}.")
    for key in WRAPPER_KEYS:
        inner = checkpoint.get(key)
        if isinstance(inner, dict) and not _has_resnet(checkpoint):
            return unwrap(inner, where)
    return checkpoint


def _has_resnet(state):
    return any(str(key).endswith("conv1.weight") for key in state)


def _as_numpy(state, where):
    out, bad = {}, []
    for key, value in state.items():
        if hasattr(value, "detach"):  # a torch tensor
            value = value.detach().cpu().float().numpy()
        if not isinstance(value, np.ndarray) or not isinstance(key, str):
            bad.append(f"{key!r} ({type(value).__name__})")
            continue
        out[key] = value.astype(np.float32) if value.dtype.kind == "f" else value
    if bad:
        raise ValueError(f"{where}: entries that are not tensors: {', '.join(bad[:10])}"
                         f"{' ...' if len(bad) > 10 else ''}; expected a state dict {{name: tensor}}.")
    return out


def resnet_prefixes(keys):
    """Every prefix p under which a torchvision ResNet starts (p + "conv1.weight" and
    p + "layer1.0.conv1.weight" both present), preferred first (PREFERRED_PREFIXES)."""
    keys = set(keys)
    found = [key[:-len("conv1.weight")] for key in keys if key.endswith("conv1.weight")]
    found = [p for p in found if p + "layer1.0.conv1.weight" in keys and not p.endswith("downsample.")]
    rank = {p: i for i, p in enumerate(PREFERRED_PREFIXES)}
    return sorted(set(found), key=lambda p: (rank.get(p, len(rank)), p))


def choose_prefix(keys, prefix=None, where="checkpoint"):
    """The prefix of the ResNet's keys: `prefix` if given (checked), else the only one found, or
    the preferred of several known ones; a ValueError listing them otherwise."""
    found = resnet_prefixes(keys)
    if prefix is not None:
        if prefix not in found:
            raise ValueError(f"{where}: no torchvision ResNet under prefix {prefix!r} (no {prefix}conv1.weight and "
                             f"{prefix}layer1.0.conv1.weight); ResNets found under: {found or 'none'}.")
        return prefix
    if not found:
        sample = sorted(keys)[:8]
        raise ValueError(f"{where}: no torchvision ResNet found: no keys like conv1.weight and layer1.0.conv1.weight "
                         f"under any prefix (first keys: {sample}). Only torchvision-layout ResNet state dicts are "
                         "read.")
    known = [p for p in found if p in PREFERRED_PREFIXES]
    if len(found) > 1 and not known:
        raise ValueError(f"{where}: ResNets found under several prefixes {found}; choose one with prefix=... "
                         "(--prefix).")
    return (known or found)[0]


def torchvision_keys(depth):
    """[(torchvision key stem, Keras layer name, kind)] of a torchvision ResNet of `depth`, kind
    "conv" (one `.weight`) or "bn" (`.weight`, `.bias`, `.running_mean`, `.running_var`)."""
    block_type, blocks = TORCHVISION_SPECS[depth]
    convs = 3 if block_type == "bottleneck" else 2
    out = [("conv1", "stem_conv", "conv"), ("bn1", "stem_bn", "bn")]
    for stage, n in enumerate(blocks, start=1):
        for i in range(n):
            torch_name, keras_name = f"layer{stage}.{i}", f"stage{stage}_block{i + 1}"
            for j in range(1, convs + 1):
                out += [(f"{torch_name}.conv{j}", f"{keras_name}_conv{j}", "conv"),
                        (f"{torch_name}.bn{j}", f"{keras_name}_bn{j}", "bn")]
            if i == 0 and (stage > 1 or block_type == "bottleneck"):  # the projection shortcut
                out += [(f"{torch_name}.downsample.0", f"{keras_name}_down_conv", "conv"),
                        (f"{torch_name}.downsample.1", f"{keras_name}_down_bn", "bn")]
    return out


def _tensor_names(depth):
    names = []
    for stem, _, kind in torchvision_keys(depth):
        names += [f"{stem}.weight"] if kind == "conv" else [f"{stem}.{part}" for part in _BN_PARTS]
    return names


def infer_depth(resnet_state):
    """torchvision's ResNet-50 if the blocks are bottlenecks (a layer1.0.conv3), else ResNet-34
    if layer1 has a third block, else ResNet-18. Missing tensors are then listed by name."""
    if "layer1.0.conv3.weight" in resnet_state:
        return 50
    return 34 if "layer1.2.conv1.weight" in resnet_state else 18


def select_resnet(state, prefix=None, where="checkpoint"):
    """(ResNet tensors with the prefix removed, info) from a torchvision-layout state dict: keys
    under the chosen prefix (`choose_prefix`), without the classifier / heads (HEAD_PREFIXES) and
    BN's num_batches_tracked. Refuses missing tensors and leftovers under the prefix by name.
    info: {"prefix", "depth", "dropped": [heads' keys], "ignored": [keys outside the prefix]}."""
    prefix = choose_prefix(state.keys(), prefix, where)
    resnet_state, dropped, ignored = {}, [], []
    for key, value in state.items():
        if not key.startswith(prefix):
            ignored.append(key)
            continue
        short = key[len(prefix):]
        if short.startswith(HEAD_PREFIXES) or short.endswith("num_batches_tracked"):
            dropped.append(key)
        else:
            resnet_state[short] = value
    depth = infer_depth(resnet_state)
    expected = _tensor_names(depth)
    missing = [prefix + k for k in expected if k not in resnet_state]
    extra = sorted(prefix + k for k in set(resnet_state) - set(expected))
    if missing or extra:
        problems = ([f"missing {len(missing)} tensor(s) of torchvision's ResNet-{depth}: {', '.join(missing)}"]
                    if missing else []) + ([f"unexpected tensor(s) under prefix {prefix!r}: {', '.join(extra)}"]
                                           if extra else [])
        raise ValueError(f"{where}: {'; '.join(problems)}. Refusing to convert a partial or unknown ResNet: "
                         "check that this is a torchvision-layout ResNet state dict (or choose another prefix).")
    return resnet_state, {"prefix": prefix, "depth": depth, "dropped": sorted(dropped), "ignored": sorted(ignored)}


def build_torchvision_resnet(depth=50, width=1.0, image_size=224, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """An ImageEncoder with the zoo's ResNet in torchvision's arrangement (ImageNet stem,
    symmetric padding) and random weights; `width` from the checkpoint's channels (1 for the
    published ones)."""
    from zoo.backbones import build_backbone
    from zoo.encoder import ImageEncoder
    backbone = build_backbone(f"resnet{depth}", width=width, image_size=image_size, stem="imagenet", mean=mean,
                              std=std, padding="torch")
    return ImageEncoder(backbone, image_size)


def load_into(encoder, resnet_state, depth, where="checkpoint"):
    """Copy torchvision ResNet tensors into `encoder`'s backbone: conv weights OIHW -> HWIO, BN
    weight / bias / running_mean / running_var -> gamma / beta / moving_mean / moving_variance.
    Every shape is checked first; a ValueError lists all that differ."""
    assignments, wrong = [], []
    for stem, layer_name, kind in torchvision_keys(depth):
        layer = encoder.backbone.get_layer(layer_name)
        if kind == "conv":
            arrays = [resnet_state[f"{stem}.weight"].transpose(2, 3, 1, 0)]
            shown = [f"{stem}.weight"]
        else:
            arrays = [resnet_state[f"{stem}.{part}"] for part in _BN_PARTS]
            shown = [f"{stem}.{part}" for part in _BN_PARTS]
        for key, array, variable in zip(shown, arrays, layer.weights):
            if tuple(array.shape) != tuple(variable.shape):
                torch_shape = resnet_state[key].shape
                wrong.append(f"{key} {tuple(torch_shape)} (layer {layer_name} expects "
                             f"{tuple(variable.shape)}{' as HWIO' if kind == 'conv' else ''})")
        assignments.append((layer, arrays))
    if wrong:
        raise ValueError(f"{where}: tensor shapes differ from torchvision's ResNet-{depth} at width "
                         f"{encoder.backbone.get_layer('stem_conv').filters / 64:g}: {'; '.join(wrong)}.")
    for layer, arrays in assignments:
        layer.set_weights(arrays)
    return encoder


def convert(path_or_state, prefix=None, image_size=224, where=None):
    """(ImageEncoder, info) from a torchvision-layout ResNet checkpoint: a file path (see
    `read_state_dict`) or an already read {name: array} dict. The encoder takes uint8 / 0..255
    RGB images, resizes them to `image_size` and normalises with ImageNet's mean / std, as
    torchvision's models expect. info: prefix, depth, width and the keys dropped / ignored."""
    if isinstance(path_or_state, dict):
        state, where = _as_numpy(unwrap(path_or_state), where or "state dict"), where or "state dict"
    else:
        where = where or os.fspath(path_or_state)
        state = read_state_dict(path_or_state)
    resnet_state, info = select_resnet(state, prefix, where)
    width = resnet_state["conv1.weight"].shape[0] / 64
    encoder = build_torchvision_resnet(info["depth"], width=width, image_size=image_size)
    load_into(encoder, resnet_state, info["depth"], where)
    return encoder, dict(info, width=width)


def import_metadata(name, encoder, info, method, source_file, license, url=None, paper=None, dataset="imagenet"):
    """The export metadata (zoo.hub.make_metadata's schema) of an imported encoder: backbone
    with padding "torch", ImageNet preprocessing (resize 256, centre crop 224 before the encoder
    in torchvision's evaluation) and `imported`: where the weights came from and under which
    licence."""
    from zoo.hub import check_name, file_record, make_metadata
    check_name(name, "name")
    if not license or not str(license).strip():
        raise ValueError("license: give the original checkpoint's licence (e.g. 'CC-BY-NC 4.0' for MoCo / DINO / "
                         "SwAV, 'Apache-2.0' for SimCLR): the export's model card states it.")
    size = encoder.image_size
    backbone = {"name": f"resnet{info['depth']}", "width": info["width"], "stem": "imagenet", "padding": "torch"}
    input_spec = {"image_size": size, "dtype": "uint8 or float32", "value_range": [0, 255],
                  "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
                  # what torchvision's evaluation does before the network; the encoder itself only resizes
                  "eval_transform": {"resize_shorter_side": round(size * 256 / 224), "center_crop": size}}
    record = file_record(source_file)
    imported = {"format": "torchvision", "file": os.path.basename(source_file), "sha256": record["sha256"],
                "bytes": record["bytes"], "prefix": info["prefix"], "dropped_keys": len(info["dropped"]),
                "ignored_keys": len(info["ignored"]), "license": str(license).strip(), "url": url, "paper": paper}
    training = {"dataset": dataset, "data_description": f"{dataset} (training by the original authors)"}
    meta = make_metadata(name, encoder, method, backbone, input_spec, training=training)
    meta["imported"] = imported
    return meta
