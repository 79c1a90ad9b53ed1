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
Every metadata field used is checked first, with a message naming the file and the field
(`_check_metadata`: known names, finite numbers within bounds, paths confined to the folder),
and the weight arrays' shapes are compared with the built model's before they are read.
"""
import glob
import hashlib
import json
import math
import numbers
import os
import re
import shlex
import tempfile
import warnings

from zoo.registry import unknown_name_message

PRESET_DIR = os.path.join(os.path.dirname(__file__), "presets")
METADATA_FILE = "metadata.json"
WEIGHTS_FILE = "model.weights.h5"
FORMAT_VERSION = 1
SOURCE_TYPES = ("package", "folder", "huggingface")
# what zoo.load needs from a Hugging Face repository (not the SavedModel, TFLite or ONNX files)
HF_LOAD_PATTERNS = [METADATA_FILE, "config.json", "README.md", "*.weights.h5"]
# An encoder's name: also a file name (presets/NAME.json, published/NAME), so no path separator
# and no leading dot. Registered presets follow the stricter `preset_name` pattern, [a-z0-9_].
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# Upper bounds on what a metadata file may ask us to build: above them the model would not fit
# in memory (a hostile or mistyped file must fail with a message, not an out-of-memory kill).
MAX_WIDTH = 4
MAX_IMAGE_SIZE = 1024


class HashMismatchError(ValueError):
    """A file's sha256 differs from its metadata's: a corrupt or replaced file, which the CLIs
    report as one `error:` line (a ValueError, as trainers.errors.USER_ERRORS expects)."""


def sha256(path, chunk=1 << 20):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def file_record(path):
    """The {"sha256", "bytes"} entry of a file in metadata["files"]."""
    return {"sha256": sha256(path), "bytes": os.path.getsize(path)}


def make_metadata(name, encoder, method, backbone_config, input_spec, training=None, results=None):
    """The metadata of an encoder, the schema shared by export folders and package presets (its
    files are added when they are written). `_check_metadata` checks the fields `load` reads."""
    return {
        "name": name,
        "format_version": FORMAT_VERSION,
        "method": method,
        "backbone": backbone_config,
        "input": input_spec,
        "feature_dim": int(encoder.feature_dim),
        "parameters": int(encoder.backbone.count_params()),
        "training": training or {},
        "results": results or [],
        "files": {},
        "source": {"type": "folder", "path": "."},
    }


def write_metadata(path, meta):
    """Write `meta` as the JSON file `path` (an export's metadata.json or a preset's NAME.json)."""
    with open(path, "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")


def read_metadata(path):
    """The metadata dict in the JSON file at `path`; a ValueError naming the file if it is not
    a JSON object."""
    try:
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
    except (ValueError, UnicodeDecodeError) as e:  # json.JSONDecodeError is a ValueError
        raise ValueError(f"{path}: not a valid JSON metadata file ({e}). Re-export the encoder "
                         "(zoo-export) or restore the file.") from e
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: holds a JSON {type(meta).__name__}, expected an object "
                         '({"name": ..., "backbone": ..., ...}). Re-export the encoder (zoo-export).')
    return meta


def _presets():
    out = {}
    for path in sorted(glob.glob(os.path.join(PRESET_DIR, "*.json"))):
        meta = read_metadata(path)
        out[meta["name"]] = (meta, os.path.dirname(path))
    return out


def check_name(name, where):
    """`name` if it is a valid encoder name (NAME_PATTERN), else a ValueError naming `where`."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise ValueError(f"{where}: name {name!r} is not a valid encoder name: use letters, digits, "
                         "'_', '-' and '.', starting with a letter or digit (no '/' or '..'), "
                         "e.g. simclr_resnet18w025_cifar10.")
    return name


def file_path(root, rel, where):
    """root/rel for a path `rel` listed in metadata["files"]; a ValueError naming `where` if it
    is absolute or leads outside `root` (through '..' or a symbolic link)."""
    if not isinstance(rel, str) or not rel or os.path.isabs(rel) or os.path.isabs(os.path.expanduser(rel)):
        raise ValueError(f"{where}: files entry {rel!r} is not a relative path inside {root}; refusing it.")
    top = os.path.realpath(root)
    parts = os.path.normpath(top).split(os.sep)
    if len(parts) > 2 and parts[-2] == "snapshots" and parts[-3].startswith("models--"):
        # a Hugging Face cache snapshot: its files are links to the repo's blobs/ folder
        top = os.sep.join(parts[:-2])
    path = os.path.realpath(os.path.join(root, rel))
    if os.path.commonpath([top, path]) != top:
        raise ValueError(f"{where}: files entry {rel!r} leads outside {root} (to {path}); refusing it. "
                         "An export's files live in its own folder.")
    return os.path.join(root, rel)


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
    meta, _, meta_path = _resolve(name_or_path)
    _check_metadata(meta, meta_path)
    return _description(meta)


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
        path = file_path(root, rel, meta.get("name", root))
        if not os.path.exists(path):
            raise FileNotFoundError(f"{meta['name']}: file {path} listed in its metadata is missing.")
        digest = sha256(path)
        if digest != info["sha256"]:
            raise HashMismatchError(f"{meta['name']}: {path} has sha256 {digest}, expected {info['sha256']}. "
                                    "The file is corrupt or was replaced; refusing to load it. "
                                    "Re-download or re-export it.")


def _resolve(name_or_path):
    """(metadata, folder holding its files, metadata file path) for a registered name, export
    folder or hf:// id."""
    if isinstance(name_or_path, os.PathLike):
        name_or_path = os.fspath(name_or_path)
    if not isinstance(name_or_path, str):
        raise TypeError(f"expected a registered encoder name (zoo.list_models()), an export folder path or "
                        f"'hf://org/repo', got {name_or_path!r} ({type(name_or_path).__name__}).")
    if name_or_path.startswith("hf://"):
        return _resolve_folder(_hf_snapshot(name_or_path[len("hf://"):]))
    if os.path.isdir(name_or_path):
        return _resolve_folder(name_or_path)
    if os.sep in name_or_path or name_or_path.startswith("."):
        raise FileNotFoundError(f"No export folder at {name_or_path!r}. Pass a folder written by zoo-export, "
                                f"a registered name ({', '.join(list_models()) or 'none'}), or hf://org/repo.")
    presets = _presets()
    meta = get_metadata(name_or_path)
    json_dir = presets[name_or_path][1]
    return meta, _preset_root(meta, json_dir), os.path.join(json_dir, f"{name_or_path}.json")


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
    return read_metadata(path), folder, path


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
           f"zoo.load({'hf://' + repo!r}) again, or run `hf download {shlex.quote(repo_id)}"
           f"{' --revision ' + shlex.quote(revision) if revision else ''}`; or point HF_HOME / HF_HUB_CACHE at the cache "
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
    meta_path = os.path.join(folder, METADATA_FILE)
    files = read_metadata(meta_path).get("files", {})
    if not isinstance(files, dict):
        raise ValueError(f"{meta_path}: field files = {files!r} is not an object {{path: {{sha256, bytes}}}}.")
    missing = [rel for rel in files if isinstance(rel, str) and rel.endswith(".weights.h5")
               and not os.path.exists(file_path(folder, rel, meta_path))]
    if missing:
        raise _hf_missing(repo, cache, offline, f"the cached snapshot {folder} lacks {', '.join(missing)}")
    return folder


def _is_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _check_metadata(meta, where=None):
    """Refuse metadata whose fields are not plain values this package knows, within bounds: the
    encoder is built from them by our own code, never deserialised from the file. `where`: the
    metadata file, named in the message. Returns the path of the weights file (relative)."""
    from zoo.backbones import BACKBONES
    where = where or meta.get("name", "metadata")

    def bad(field, value, expected):
        return ValueError(f"{where}: metadata field {field} = {value!r} is not {expected}; refusing to load. "
                          "zoo.load builds encoders only from known backbones and numbers, and never "
                          "deserialises layers or code from model files.")
    check_name(meta.get("name"), where)
    version = meta.get("format_version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise bad("format_version", version, "a positive integer")
    b, spec = meta.get("backbone"), meta.get("input")
    if not isinstance(b, dict) or b.get("name") not in BACKBONES:
        raise bad("backbone", b, f"a backbone of {sorted(BACKBONES)}")
    if not _is_number(b.get("width")) or not 0 < b["width"] <= MAX_WIDTH:
        raise bad("backbone.width", b.get("width"), f"a number in (0, {MAX_WIDTH}]")
    if b.get("stem") not in ("cifar", "imagenet", "auto"):
        raise bad("backbone.stem", b.get("stem"), "'cifar', 'imagenet' or 'auto'")
    if b.get("padding", "same") not in ("same", "torch"):  # "torch": imported torchvision weights
        raise bad("backbone.padding", b.get("padding"), "'same' or 'torch'")
    size = spec.get("image_size") if isinstance(spec, dict) else spec
    if not isinstance(size, int) or isinstance(size, bool) or not 0 < size <= MAX_IMAGE_SIZE:
        raise bad("input.image_size", size, f"an integer in 1..{MAX_IMAGE_SIZE}")
    for key in ("mean", "std"):  # one value per input channel: 3 (RGB) or 1 (colorization's lightness)
        v = spec.get(key)
        if not (isinstance(v, list) and len(v) in (1, 3) and all(_is_number(x) for x in v)):
            raise bad(f"input.{key}", v, "a list of 3 (or 1) finite numbers")
    if len(spec["mean"]) != len(spec["std"]):
        raise bad("input.std", spec["std"], f"{len(spec['mean'])} numbers, one per value of input.mean")
    if not all(x > 0 for x in spec["std"]):
        raise bad("input.std", spec["std"], "a list of positive numbers")
    dim = meta.get("feature_dim")
    if dim is not None and (not isinstance(dim, int) or isinstance(dim, bool) or dim <= 0):
        raise bad("feature_dim", dim, "a positive integer")
    files = meta.get("files", {})
    if not isinstance(files, dict) or not all(isinstance(rel, str) and isinstance(info, dict)
                                              for rel, info in files.items()):
        raise bad("files", files, "an object {relative path: {sha256, bytes}}")
    weights = [rel for rel in files if rel.endswith(".weights.h5")]
    if len(weights) != 1:
        raise bad("files", list(files), "a list with exactly one .weights.h5 file")
    return weights[0]


def build_encoder(meta, input_shape=None, name=None, where=None):
    """An ImageEncoder with the architecture described by `meta` (random weights); `where`
    names the metadata file in errors."""
    from zoo.backbones import build_backbone
    from zoo.encoder import ImageEncoder, MAX_PIXELS_PER_IMAGE
    _check_metadata(meta, where)
    b, spec = meta["backbone"], meta["input"]
    size = spec["image_size"]
    if input_shape is not None:
        shape = tuple(input_shape)
        if len(shape) != 3 or shape[-1] != 3 or any(d is not None and (not isinstance(d, int) or d <= 0)
                                                    for d in shape[:2]):
            raise ValueError(f"input_shape={input_shape!r}: expected (height, width, 3) with positive integer "
                             "or None sizes, e.g. (64, 64, 3), or (None, None, 3) for no resize.")
        size = None if None in shape[:2] else shape[:2]
        if size is not None and size[0] * size[1] > MAX_PIXELS_PER_IMAGE:
            raise ValueError(f"input_shape={input_shape!r}: more than {MAX_PIXELS_PER_IMAGE} pixels per image "
                             "(zoo.encoder.MAX_PIXELS_PER_IMAGE) would not fit in memory; use e.g. "
                             f"input_shape=({spec['image_size'] * 4}, {spec['image_size'] * 4}, 3).")
    backbone = build_backbone(b["name"], width=b["width"], image_size=spec["image_size"], stem=b["stem"],
                              mean=spec["mean"], std=spec["std"], padding=b.get("padding", "same"))
    encoder = ImageEncoder(backbone, size, name=name or meta["name"])
    dim = meta.get("feature_dim")
    if dim is not None and dim != encoder.feature_dim:
        raise ValueError(f"{where or meta['name']}: metadata field feature_dim = {dim} disagrees with the "
                         f"encoder built from its backbone fields ({b['name']} width {b['width']}: "
                         f"{encoder.feature_dim} features); the file was edited or is corrupt. Re-export it.")
    return encoder


def _weight_shapes(path):
    """{dataset path: shape} of every array in a Keras .weights.h5 file."""
    import h5py
    shapes = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda key, item: shapes.__setitem__(key, item.shape)
                     if isinstance(item, h5py.Dataset) else None)
    return shapes


def check_weight_shapes(encoder, path, where, backbone=None):
    """Refuse a weights file whose arrays do not have the shapes of `encoder`'s weights, naming
    the first that differs (Keras would only say "N objects could not be loaded"). The
    expected layout is that of the same encoder's own save_weights."""
    with tempfile.TemporaryDirectory() as tmp:
        expected_file = os.path.join(tmp, "expected.weights.h5")
        with warnings.catch_warnings():  # Keras's saving code warns about numpy 2's copy keyword
            warnings.simplefilter("ignore", DeprecationWarning)
            encoder.save_weights(expected_file)
        expected = _weight_shapes(expected_file)
    try:
        found = _weight_shapes(path)
    except OSError as e:
        raise ValueError(f"{path}: not a readable Keras .weights.h5 file ({e}).") from e
    for key, shape in expected.items():
        if found.get(key) != shape:
            layer = key.rsplit("/vars/", 1)[0]
            got = f"shape {found[key]}" if key in found else "no such array"
            raise ValueError(f"{path}: weights of layer {layer!r} ({key}) have {got}, but the encoder built "
                             f"from {where} expects shape {shape}: the weights and the metadata (backbone "
                             f"{backbone}) disagree, e.g. a different width. Re-export the run, "
                             "or restore the matching metadata.json.")
    extra = sorted(set(found) - set(expected))
    if extra:
        raise ValueError(f"{path}: holds {len(extra)} arrays the encoder built from {where} does not have "
                         f"(first: {extra[0]}); the weights and the metadata disagree. Re-export the run.")


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
    meta, root, meta_path = _resolve(name_or_path)
    weights_file = _check_metadata(meta, meta_path)
    if meta.get("format_version", 1) > FORMAT_VERSION:
        raise ValueError(f"{meta['name']} uses metadata format {meta['format_version']}; this zoo reads up to "
                         f"{FORMAT_VERSION}. Upgrade the package.")
    if weights is None:
        encoder = build_encoder(meta, input_shape=input_shape, name=f"{meta['name']}_random_init",
                                where=meta_path)
        # what describes the trained weights (results, fingerprint, caveat) does not apply
        encoder.metadata = {key: value for key, value in meta.items()
                            if key not in ("results", "fingerprint", "caveat", "files")} | {"weights": None}
        encoder.trainable = trainable
        return encoder
    verify_files(meta, root, only=[weights_file])
    encoder = build_encoder(meta, input_shape=input_shape, where=meta_path)
    weights_path = file_path(root, weights_file, meta_path)
    check_weight_shapes(encoder, weights_path, meta_path, meta["backbone"])
    encoder.load_weights(weights_path)
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
