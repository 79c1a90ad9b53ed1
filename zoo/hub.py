"""Pretrained encoders: the registry of presets, `list_models`, `describe`, `load` and
`classifier` (a loaded encoder under a new Dense head).

A pretrained encoder is described by one metadata JSON (schema in `make_metadata`): its
method, backbone config, input spec, training recipe, results (with the split they were
measured on), its files with their sha256 and `source`, where those files live:

    {"type": "package"}                                  zoo/presets/ (paths relative to it)
    {"type": "folder", "path": "DIR"}                    a local folder (relative to the JSON)
    {"type": "huggingface", "repo_id": "org/repo", "revision": "COMMIT_OR_BRANCH"}

A registered name is one JSON in `zoo/presets/`; an export folder holds the same JSON as
`metadata.json` beside `model.weights.h5`; a Hugging Face repository is laid out like an
export folder. Names follow `METHOD_BACKBONE[wWIDTH]_DATASET` (`preset_name`).

Safety: the file's sha256 is checked before anything is read from it, and the model is built
by this package's own code from a few validated fields (backbone name from a fixed list,
numbers), then plain weight arrays are read into it. No Keras config, Lambda layer or pickle
from the downloaded files is ever deserialised, so loading never executes code from them.
"""
import glob
import hashlib
import json
import numbers
import os
import warnings

from zoo.registry import unknown_name_message

PRESET_DIR = os.path.join(os.path.dirname(__file__), "presets")
METADATA_FILE = "metadata.json"
WEIGHTS_FILE = "model.weights.h5"
FORMAT_VERSION = 1
SOURCE_TYPES = ("package", "folder", "huggingface")
# what zoo.load needs from a Hugging Face repository (not the SavedModel, TFLite or ONNX files)
HF_LOAD_PATTERNS = [METADATA_FILE, "config.json", "README.md", "*.weights.h5"]


class HashMismatchError(RuntimeError):
    pass


def sha256(path, chunk=1 << 20):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def file_record(path):
    """The {"sha256", "bytes"} entry of a file in metadata["files"]."""
    return {"sha256": sha256(path), "bytes": os.path.getsize(path)}


def _presets():
    out = {}
    for path in sorted(glob.glob(os.path.join(PRESET_DIR, "*.json"))):
        with open(path) as f:
            meta = json.load(f)
        out[meta["name"]] = (meta, os.path.dirname(path))
    return out


def preset_name(method, backbone, width, dataset):
    """The registry's naming pattern `METHOD_BACKBONE[wWIDTH]_DATASET`: the width multiplier
    without its decimal point, left out at 1 (simclr_resnet18w025_cifar10 is SimCLR, ResNet-18
    at width 0.25, trained on CIFAR-10; simclr_resnet50_imagenet would be full width)."""
    w = "" if float(width) == 1.0 else "w" + f"{float(width):g}".replace(".", "")
    return f"{method}_{backbone}{w}_{dataset}"


def list_models(method=None, dataset=None, details=False):
    """Names of the pretrained encoders that ship with the package, optionally filtered by
    method (e.g. "simclr") and training data set (e.g. "cifar10"). Names follow
    `METHOD_BACKBONE[wWIDTH]_DATASET` (see `preset_name`), e.g. simclr_resnet18w025_cifar10.
    `details=True`: a list of `describe(name)` dicts instead, in the same order."""
    chosen = []
    for name, (meta, _) in sorted(_presets().items()):
        if method and meta["method"] != method:
            continue
        if dataset and meta["training"].get("dataset") != dataset:
            continue
        chosen.append(meta)
    return [_description(meta) for meta in chosen] if details else [meta["name"] for meta in chosen]


# Methods whose training reads the data set's class labels: SupCon always, the triplet loss
# unless its recipe set use_labels=False. Every other method ignores them.
def _uses_labels(meta):
    config = meta.get("training", {}).get("recipe", {}).get("method_config", {})
    if meta["method"] == "supcon":
        return True
    if meta["method"] == "triplet":
        return bool(config.get("use_labels", True))
    return False


def describe(name_or_path):
    """What one chooses an encoder by, as a flat dict read from its metadata: name, method,
    backbone, width, parameters, image_size (its training input size), feature_dim,
    knn_top1 / linear_top1 (val split, named in eval_split), the training budget (dataset,
    epochs, images_seen, train_minutes), uses_labels (False: self-supervised) and caveat
    (None, or what to know before relying on it). Accepts what zoo.load accepts."""
    return _description(_resolve(name_or_path)[0])


def _description(meta):
    results = {r["protocol"]: r for r in meta.get("results", []) if not r.get("layer")}
    training = meta.get("training", {})
    splits = sorted({r["split"] for r in results.values()})
    return {
        "name": meta["name"],
        "method": meta["method"],
        "backbone": meta["backbone"]["name"],
        "width": meta["backbone"]["width"],
        "parameters": meta.get("parameters"),
        "image_size": meta["input"]["image_size"],
        "feature_dim": meta.get("feature_dim"),
        "knn_top1": results.get("knn", {}).get("top1"),
        "linear_top1": results.get("linear", {}).get("top1"),
        "eval_split": "; ".join(splits) or None,
        "dataset": training.get("dataset"),
        "epochs": training.get("epochs"),
        "images_seen": training.get("images_seen"),
        "train_minutes": training.get("minutes"),
        "uses_labels": _uses_labels(meta),
        "caveat": meta.get("caveat"),
    }


def get_metadata(name):
    presets = _presets()
    if name not in presets:
        raise ValueError(unknown_name_message("model", name, presets) +
                         " Pass a registered name (zoo.list_models()), an export folder, or hf://org/repo.")
    return presets[name][0]


def verify_files(meta, root, only=None):
    """Check the files listed in meta["files"] (paths relative to `root`; all of them, or those
    in `only`) against their sha256."""
    for rel, info in meta["files"].items():
        if only is not None and rel not in only:
            continue
        path = os.path.join(root, rel)
        if not os.path.exists(path):
            raise FileNotFoundError(f"{meta['name']}: file {path} listed in its metadata is missing.")
        digest = sha256(path)
        if digest != info["sha256"]:
            raise HashMismatchError(f"{meta['name']}: {path} has sha256 {digest}, expected {info['sha256']}. "
                                    "The file is corrupt or was replaced; refusing to load it. "
                                    "Re-download or re-export it.")


def _resolve(name_or_path):
    """(metadata, folder holding its files) for a registered name, export folder or hf:// id."""
    if isinstance(name_or_path, os.PathLike):
        name_or_path = os.fspath(name_or_path)
    if name_or_path.startswith("hf://"):
        return _resolve_folder(_hf_snapshot(name_or_path[len("hf://"):]))
    if os.path.isdir(name_or_path):
        return _resolve_folder(name_or_path)
    if os.sep in name_or_path or name_or_path.startswith("."):
        raise FileNotFoundError(f"No export folder at {name_or_path!r}. Pass a folder written by zoo-export, "
                                f"a registered name ({', '.join(list_models()) or 'none'}), or hf://org/repo.")
    presets = _presets()
    meta = get_metadata(name_or_path)
    return meta, _preset_root(meta, presets[name_or_path][1])


def _preset_root(meta, json_dir):
    """The folder holding a registered preset's files, from its "source" (package by default)."""
    source = meta.get("source") or {"type": "package"}
    kind = source.get("type")
    if kind == "package":
        return json_dir
    if kind == "folder":
        return os.path.join(json_dir, os.path.expanduser(source["path"]))
    if kind == "huggingface":
        repo = source["repo_id"] + (f"@{source['revision']}" if source.get("revision") else "")
        return _hf_snapshot(repo)
    raise ValueError(f"{meta['name']}: unknown source type {kind!r} in its metadata; "
                     f"expected one of {', '.join(SOURCE_TYPES)}.")


def _resolve_folder(folder):
    path = os.path.join(folder, METADATA_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{folder} is not an export folder: it has no {METADATA_FILE}. "
                                "Folders written by zoo-export have one.")
    with open(path) as f:
        return json.load(f), folder


def hf_cache_dir():
    """The Hugging Face hub cache, read from the environment now (HF_HUB_CACHE, then
    HF_HOME/hub), as huggingface_hub resolves it."""
    env = os.environ
    if env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE"):
        return os.path.expanduser(env.get("HF_HUB_CACHE") or env["HUGGINGFACE_HUB_CACHE"])
    if env.get("HF_HOME"):
        return os.path.join(os.path.expanduser(env["HF_HOME"]), "hub")
    from huggingface_hub import constants
    return constants.HF_HUB_CACHE


def hf_offline():
    from huggingface_hub import constants
    value = os.environ.get("HF_HUB_OFFLINE")
    if value is not None:
        return value.strip().upper() in ("1", "ON", "YES", "TRUE")
    return bool(constants.HF_HUB_OFFLINE)


def _hf_missing(repo, cache, offline, why):
    repo_id, _, revision = repo.partition("@")
    folder = os.path.join(cache, "models--" + repo_id.replace("/", "--"))
    how = (f"HF_HUB_OFFLINE=1 is set, so only the local Hugging Face cache is read ({folder}). "
           "Get the files once with network access: unset HF_HUB_OFFLINE and call "
           f"zoo.load('hf://{repo}') again, or run `hf download {repo_id}"
           f"{' --revision ' + revision if revision else ''}`; or point HF_HOME / HF_HUB_CACHE at the cache "
           "that holds them, or pass a local export folder instead."
           if offline else
           f"Looked on the Hub and in the local Hugging Face cache ({folder}). Check the repo id, the "
           "revision and your network; for a private repo set HF_TOKEN or run `hf auth login`.")
    return FileNotFoundError(f"Could not get hf://{repo}: {why}. {how}")


def _hf_snapshot(repo):
    """The folder of a Hugging Face repo in the local cache, downloaded first unless offline
    (HF_HUB_OFFLINE=1), in which case only the cache is read."""
    from huggingface_hub import snapshot_download
    repo_id, _, revision = repo.partition("@")
    offline, cache = hf_offline(), hf_cache_dir()
    try:
        folder = snapshot_download(repo_id, revision=revision or None, cache_dir=cache,
                                   local_files_only=offline, allow_patterns=HF_LOAD_PATTERNS)
    except Exception as e:  # network errors, missing repos and cache misses all land here
        raise _hf_missing(repo, cache, offline, f"{type(e).__name__}: {e}") from e
    if not os.path.exists(os.path.join(folder, METADATA_FILE)):
        raise _hf_missing(repo, cache, offline, f"the cached snapshot {folder} has no {METADATA_FILE}")
    with open(os.path.join(folder, METADATA_FILE)) as f:
        missing = [rel for rel in json.load(f).get("files", {})
                   if rel.endswith(".weights.h5") and not os.path.exists(os.path.join(folder, rel))]
    if missing:
        raise _hf_missing(repo, cache, offline, f"the cached snapshot {folder} lacks {', '.join(missing)}")
    return folder


def _check_metadata(meta):
    """Refuse metadata whose architecture fields are not plain values this package knows:
    the encoder is built from them by our own code, never deserialised from the file."""
    from zoo.backbones import BACKBONES
    name = meta.get("name", "?")

    def bad(field, value, expected):
        return ValueError(f"{name}: metadata field {field} = {value!r} is not {expected}; refusing to load. "
                          "zoo.load builds encoders only from known backbones and numbers, and never "
                          "deserialises layers or code from model files.")
    b, spec = meta.get("backbone"), meta.get("input")
    if not isinstance(b, dict) or b.get("name") not in BACKBONES:
        raise bad("backbone", b, f"a backbone of {sorted(BACKBONES)}")
    if not isinstance(b.get("width"), numbers.Real) or isinstance(b.get("width"), bool) or b["width"] <= 0:
        raise bad("backbone.width", b.get("width"), "a positive number")
    if b.get("stem") not in ("cifar", "imagenet", "auto"):
        raise bad("backbone.stem", b.get("stem"), "'cifar', 'imagenet' or 'auto'")
    if not isinstance(spec, dict) or not isinstance(spec.get("image_size"), int) or spec["image_size"] <= 0:
        raise bad("input.image_size", spec.get("image_size") if isinstance(spec, dict) else spec,
                  "a positive integer")
    for key in ("mean", "std"):
        v = spec.get(key)
        if not (isinstance(v, list) and len(v) == 3 and all(isinstance(x, numbers.Real) for x in v)):
            raise bad(f"input.{key}", v, "a list of 3 numbers")
    weights = [rel for rel in meta.get("files", {}) if rel.endswith(".weights.h5")]
    if len(weights) != 1:
        raise bad("files", list(meta.get("files", {})), "a list with exactly one .weights.h5 file")
    return weights[0]


def build_encoder(meta, input_shape=None, name=None):
    """An ImageEncoder with the architecture described by `meta` (random weights)."""
    from zoo.backbones import build_backbone
    from zoo.encoder import ImageEncoder
    _check_metadata(meta)
    b, spec = meta["backbone"], meta["input"]
    size = spec["image_size"]
    if input_shape is not None:
        shape = tuple(input_shape)
        if len(shape) != 3 or shape[-1] != 3 or any(d is not None and (not isinstance(d, int) or d <= 0)
                                                    for d in shape[:2]):
            raise ValueError(f"input_shape={input_shape!r}: expected (height, width, 3) with positive integer "
                             "or None sizes, e.g. (64, 64, 3), or (None, None, 3) for no resize.")
        size = None if None in shape[:2] else shape[:2]
    backbone = build_backbone(b["name"], width=b["width"], image_size=spec["image_size"], stem=b["stem"],
                              mean=spec["mean"], std=spec["std"])
    return ImageEncoder(backbone, size, name=name or meta["name"])


def _check_weights_choice(weights):
    if not (weights is None or (isinstance(weights, str) and weights == "pretrained")):
        raise ValueError(f"weights={weights!r}: expected \"pretrained\" (the shipped weights, sha256-checked) or "
                         "None (random init: the same architecture and preprocessing, untrained).")


def load(name_or_path, trainable=False, input_shape=None, weights="pretrained", blocks=None, pooled=True):
    """A pretrained encoder as a `keras.Model`: RGB images [N, H, W, 3] (uint8, or float 0..255,
    any size) -> features [N, D].

    `name_or_path`: a registered name (zoo.list_models()), an export folder written by
    zoo-export, or "hf://org/repo[@revision]" (with HF_HUB_OFFLINE=1 only the local Hugging Face
    cache is read). `trainable=True` to fine-tune it inside your own model (see zoo.finetune).
    `input_shape=(H, W, 3)` runs the backbone at H x W instead of the training size (images of
    any size are resized to it; the ResNet weights work at any resolution, e.g. to fine-tune a
    32 px encoder on 64 px images); `(None, None, 3)` feeds images at their own size, unresized.
    `weights=None`: the same architecture and preprocessing with random (untrained) weights,
    the baseline to compare with; `keras.utils.set_random_seed(s)` before the call makes them
    reproducible. Its `metadata` has "weights": None and no results.
    `blocks=["stage2", "stage3", "stage4"]`: multi-scale features (timm's features_only=True):
    the model returns a dict {block: [N, C]} of the globally average-pooled outputs of those
    blocks (of "stem", "stage1".."stage4"), or with `pooled=False` the maps [N, h, w, C];
    `feature_dim` is then {block: C}. Pooled "stage4" equals the plain encoder's features.
    The weights file's sha256 is checked before it is read (HashMismatchError names the file).
    An encoder whose metadata carries a "caveat" (see its model card) warns with it (UserWarning)."""
    _check_weights_choice(weights)
    if blocks is None and pooled is not True:
        raise ValueError(f"pooled={pooled!r} applies to blocks=[...] only: pass e.g. blocks=['stage4'], "
                         "pooled=False for the last feature map.")
    if blocks is not None:
        from zoo.encoder import block_encoder
        encoder = load(name_or_path, trainable=trainable, input_shape=input_shape, weights=weights)
        multi = block_encoder(encoder, blocks, pooled)
        multi.trainable = trainable
        return multi
    meta, root = _resolve(name_or_path)
    if meta.get("format_version", 1) > FORMAT_VERSION:
        raise ValueError(f"{meta['name']} uses metadata format {meta['format_version']}; this zoo reads up to "
                         f"{FORMAT_VERSION}. Upgrade the package.")
    weights_file = _check_metadata(meta)
    if weights is None:
        encoder = build_encoder(meta, input_shape=input_shape, name=f"{meta['name']}_random_init")
        # what describes the trained weights (results, fingerprint, caveat) does not apply
        encoder.metadata = {key: value for key, value in meta.items()
                            if key not in ("results", "fingerprint", "caveat", "files")} | {"weights": None}
        encoder.trainable = trainable
        return encoder
    verify_files(meta, root, only=[weights_file])
    encoder = build_encoder(meta, input_shape=input_shape)
    encoder.load_weights(os.path.join(root, weights_file))
    encoder.trainable = trainable
    encoder.metadata = meta
    if meta.get("caveat"):
        warnings.warn(f"{meta['name']}: {meta['caveat']} (see its model card in MODEL_CARDS.md)", UserWarning,
                      stacklevel=2)
    return encoder


def classifier(name_or_path, num_classes, trainable=True, weights="pretrained", dropout=0.0, input_shape=None,
               name=None):
    """An image classifier ready to `compile` and `fit`: the encoder (`zoo.load(name_or_path,
    trainable, input_shape, weights)`), then Dropout(`dropout`) if > 0, then Dense(num_classes).

    A `keras.Model` from RGB images [N, H, W, 3] (uint8 or float 0..255, any size, e.g. the
    batches of keras.utils.image_dataset_from_directory) to logits [N, num_classes]; train it
    with `SparseCategoricalCrossentropy(from_logits=True)`. The encoder is `model.layers[1]`
    (for zoo.finetune.freeze_stages / SplitOptimizer). Saves with model.save."""
    import keras
    if not isinstance(num_classes, numbers.Integral) or isinstance(num_classes, bool) or num_classes < 1:
        raise ValueError(f"num_classes={num_classes!r}: expected a positive integer, the number of classes.")
    if not isinstance(dropout, numbers.Real) or not 0 <= dropout < 1:
        raise ValueError(f"dropout={dropout!r}: expected a rate in [0, 1).")
    encoder = load(name_or_path, trainable=trainable, input_shape=input_shape, weights=weights)
    images = keras.Input((None, None, 3), name="images")  # float32: uint8 arrays are converted on the way in
    features = encoder(images)
    if dropout:
        features = keras.layers.Dropout(dropout, name="dropout")(features)
    logits = keras.layers.Dense(int(num_classes), name="logits")(features)
    return keras.Model(images, logits, name=name or f"{encoder.name}_classifier")
