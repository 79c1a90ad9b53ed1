"""Pretrained encoders: the registry of presets, `list_models` and `load`.

A pretrained encoder is described by one metadata JSON (schema in `make_metadata`): its
method, backbone config, input spec, training recipe, results (with the split they were
measured on) and its files with their sha256. It lives either in the package
(`zoo/presets/NAME.json` + `zoo/presets/weights/`), in an export folder (`metadata.json`
beside `model.weights.h5`), or in a Hugging Face repository laid out like an export folder.
Every file's hash is checked before anything is deserialised, and weights are loaded into a
model built from the JSON config, so loading never executes code from the files.
"""
import glob
import hashlib
import json
import os

from zoo.registry import unknown_name_message

PRESET_DIR = os.path.join(os.path.dirname(__file__), "presets")
METADATA_FILE = "metadata.json"
WEIGHTS_FILE = "model.weights.h5"
FORMAT_VERSION = 1


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


def list_models(method=None, dataset=None):
    """Names of the pretrained encoders that ship with the package, optionally filtered.
    Names follow `METHOD_BACKBONE[wWIDTH]_DATASET`, e.g. simclr_resnet18w025_cifar10."""
    names = []
    for name, (meta, _) in _presets().items():
        if method and meta["method"] != method:
            continue
        if dataset and meta["training"].get("dataset") != dataset:
            continue
        names.append(name)
    return sorted(names)


def get_metadata(name):
    presets = _presets()
    if name not in presets:
        raise ValueError(unknown_name_message("model", name, presets) +
                         " Pass a registered name (zoo.list_models()), an export folder, or hf://org/repo.")
    return presets[name][0]


def verify_files(meta, root):
    """Check every file listed in meta["files"] (paths relative to `root`) against its sha256."""
    for rel, info in meta["files"].items():
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
    return meta, presets[name_or_path][1]


def _resolve_folder(folder):
    path = os.path.join(folder, METADATA_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{folder} is not an export folder: it has no {METADATA_FILE}. "
                                "Folders written by zoo-export have one.")
    with open(path) as f:
        return json.load(f), folder


def _hf_snapshot(repo):
    """Download (or, offline, find in the local cache) a Hugging Face repo; returns its folder."""
    from huggingface_hub import snapshot_download
    repo_id, _, revision = repo.partition("@")
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
    try:
        return snapshot_download(repo_id, revision=revision or None, local_files_only=offline)
    except Exception as e:  # network errors, missing repos and cache misses all land here
        from huggingface_hub.constants import HF_HUB_CACHE
        raise FileNotFoundError(
            f"Could not get hf://{repo} ({type(e).__name__}: {e}). Offline, models are read from the Hugging Face "
            f"cache only ({HF_HUB_CACHE}); download it once online (or set HF_HUB_OFFLINE=0), or pass a local "
            "export folder instead.") from e


def build_encoder(meta):
    """An ImageEncoder with the architecture described by `meta` (random weights)."""
    from zoo.backbones import build_backbone
    from zoo.encoder import ImageEncoder
    b, spec = meta["backbone"], meta["input"]
    backbone = build_backbone(b["name"], width=b["width"], image_size=spec["image_size"], stem=b["stem"],
                              mean=spec["mean"], std=spec["std"])
    encoder = ImageEncoder(backbone, spec["image_size"], name=meta["name"])
    return encoder


def load(name_or_path, trainable=False):
    """A pretrained encoder as a `keras.Model`: RGB images [N, H, W, 3] (uint8, or float 0..255,
    any size) -> features [N, D]. `trainable=True` to fine-tune it inside your own model.

    `name_or_path`: a registered name (zoo.list_models()), an export folder written by
    zoo-export, or "hf://org/repo[@revision]"."""
    meta, root = _resolve(name_or_path)
    if meta.get("format_version", 1) > FORMAT_VERSION:
        raise ValueError(f"{meta['name']} uses metadata format {meta['format_version']}; this zoo reads up to "
                         f"{FORMAT_VERSION}. Upgrade the package.")
    verify_files(meta, root)
    encoder = build_encoder(meta)
    weights = [rel for rel in meta["files"] if rel.endswith(".weights.h5")]
    encoder.load_weights(os.path.join(root, weights[0]))
    encoder.trainable = trainable
    encoder.metadata = meta
    return encoder
