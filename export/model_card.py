"""Model cards: README.md of an export folder (Hugging Face YAML header + sections) and the
MODEL_CARDS.md table of every registered encoder, both generated from metadata.

    python -m export.model_card            # rewrite MODEL_CARDS.md from zoo/presets/
"""
import argparse
import json
import os

import yaml

# How each backbone stem (metadata["backbone"]["stem"]) is described in a card.
_STEMS = {"cifar": "small-image stem: 3x3 conv, stride 1, no max-pool",
          "imagenet": "ImageNet stem: 7x7 conv, stride 2, max-pool"}


def backbone_text(backbone):
    """How metadata["backbone"] is described in a card: a ResNet by its width and stem, a ViT
    (which has no stem choice) by its size, patch, token dimension, depth and pooling."""
    name, width = backbone["name"], backbone["width"]
    if name.startswith("vit"):
        from zoo.backbones import vit  # only for ViT cards: the spec of the registered size
        if name not in vit.VIT_SPECS:
            raise ValueError(f"backbone {name!r}: not a registered ViT; expected one of {sorted(vit.VIT_SPECS)}.")
        spec = vit.VIT_SPECS[name]
        size = name[len("vit_"):].rstrip("0123456789").capitalize()
        return (f"ViT-{size} at width {width}, patch {spec.patch}, {vit.scaled_dim(spec.dim, spec.heads, width)}-dim "
                f"tokens, depth {spec.depth}, mean-pooled tokens")
    return f"{name} (width {width}, {_STEMS.get(backbone['stem'], str(backbone['stem']) + ' stem')})"


_PROTOCOL_NAMES = {"knn": "kNN (k={k}, cosine, t={temperature:g})", "linear": "linear probe (softmax regression)"}
# zoo-eval's defaults: what a result recorded without its k (the presets' metadata) used
_KNN_DEFAULTS = {"k": 200, "temperature": 0.1}


def _protocol_name(result):
    """How a result's protocol is named in a card; a kNN result with the k and temperature it
    recorded (zoo-eval caps k at the smallest class's train count)."""
    name = _PROTOCOL_NAMES.get(result["protocol"], result["protocol"])
    if result["protocol"] == "knn":
        name = name.format(**{key: result.get(key, default) for key, default in _KNN_DEFAULTS.items()})
    return name


def _pct(value):
    return f"{100 * value:.2f}"


def _result_rows(meta):
    rows = ["| protocol | data | split | top-1 (%) | command |", "| --- | --- | --- | --- | --- |"]
    for r in meta["results"]:
        rows.append(f"| {_protocol_name(r)} | {r['dataset']} | {r['split']} | "
                    f"{_pct(r['top1'])} | `{r.get('command', '')}` |")
    return "\n".join(rows) if meta["results"] else "No evaluation recorded yet (run `zoo-eval`)."


def _header(meta):
    t = meta["training"]
    header = {
        "library_name": "keras",
        "license": "apache-2.0",
        "pipeline_tag": "image-feature-extraction",
        "tags": ["self-supervised", "image-feature-extraction", meta["method"], "keras-ssl-zoo"],
    }
    if t.get("dataset"):
        header["datasets"] = [t["dataset"]]
    if meta["results"]:
        header["model-index"] = [{"name": meta["name"], "results": [{
            "task": {"type": "image-classification", "name": _protocol_name(r)},
            "dataset": {"name": r["dataset"], "type": t.get("dataset") or r["dataset"], "split": r["split"]},
            "metrics": [{"type": "accuracy", "name": "top-1", "value": round(float(r["top1"]), 4)}],
        } for r in meta["results"]]}]
    return "---\n" + yaml.safe_dump(header, sort_keys=False) + "---\n"


def default_load_as(meta):
    """What a card's code passes to zoo.load: the Hub id for a Hugging Face source, else the
    registered name."""
    source = meta.get("source") or {}
    if source.get("type") == "huggingface":
        return f"hf://{source['repo_id']}" + (f"@{source['revision']}" if source.get("revision") else "")
    return meta["name"]


def usage_code(meta, load_as=None):
    """The card's "How to use" code: load, embed, then fine-tune with the first two stages
    frozen and a 10x lower learning rate on the encoder. tests run it as written."""
    size, load_as = meta["input"]["image_size"], load_as or default_load_as(meta)
    frozen = "patch_embed + block1" if meta["backbone"]["name"].startswith("vit") else "stem + stage1"
    return f"""import numpy as np
import keras
import zoo

encoder = zoo.load("{load_as}")
features = encoder(np.zeros((2, {size}, {size}, 3), np.uint8))  # -> (2, {meta['feature_dim']}); any image size

# fine-tune inside your own model: {frozen} frozen, encoder at 1/10 of the head's rate
encoder = zoo.load("{load_as}", trainable=True)
zoo.finetune.freeze_stages(encoder, 2)
inputs = keras.Input(({size}, {size}, 3), dtype="uint8")
model = keras.Model(inputs, keras.layers.Dense(10)(encoder(inputs)))
model.compile(zoo.finetune.SplitOptimizer(encoder, keras.optimizers.Adam(1e-3), encoder_lr_scale=0.1),
              keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
images, labels = np.zeros((8, {size}, {size}, 3), np.uint8), np.zeros(8, np.int32)  # your data here
model.fit(images, labels, epochs=1)
"""


def _exports_text(meta):
    lines = []
    for kind, info in sorted(meta.get("exports", {}).items()):
        lines.append(f"- `{info['file']}` ({'TFLite / LiteRT' if kind == 'tflite' else 'ONNX'}): input "
                     f"{info['input']}, output {info['output']}; max |difference| to the Keras model "
                     f"{info['max_abs_diff_vs_keras']:.2g} on the export's check images.")
    return ("\n\nAlso in this repository:\n\n" + "\n".join(lines)) if lines else ""


def _caveat_text(meta):
    return f"\n\n> **Caveat:** {meta['caveat']}" if meta.get("caveat") else ""


def render_model_card(meta, load_as=None):
    """README.md of an export folder / Hub repo. `load_as`: what its code passes to zoo.load
    (default: the Hub id for a Hugging Face source, else the name)."""
    if meta.get("imported"):
        return render_imported_card(meta, load_as)
    b, spec, t = meta["backbone"], meta["input"], meta["training"]
    recipe = t.get("recipe")
    return f"""{_header(meta)}
# {meta['name']}

A **{meta['method']}** self-supervised image encoder from keras-ssl-zoo: {backbone_text(b)},
{meta['parameters']:,} parameters, {meta['feature_dim']}-d features.
It maps RGB images to feature vectors for linear classifiers, kNN retrieval or fine-tuning;
the projection / pretext heads used in pre-training are not included.{_caveat_text(meta)}

## How to load and fine-tune

```python
{usage_code(meta, load_as).strip()}
```

Input: uint8 RGB, or float in 0..255, shape [N, H, W, 3]; images are resized to
{spec['image_size']} px, scaled to [0, 1] and normalised with mean {list(spec['mean'])} and std
{list(spec['std'])} inside the model. The SavedModel in `saved_model/` has the signatures
`serving_default` (uint8) and `serving_float` (float32 0..255), any batch and image size.{_exports_text(meta)}

## Training data and recipe

- data: {t.get('data_description', t.get('data', 'unknown'))}
- epochs: {t.get('epochs', '?')}, images seen: {t.get('images_seen', '?'):,} (batch {t.get('batch_size', '?')})
- command: `{t.get('command', '')}`

Recipe:

```yaml
{yaml.safe_dump(recipe, sort_keys=False).strip() if recipe else 'not recorded'}
```

## Results

{_result_rows(meta)}

## Compute

{t.get('minutes', '?')} minutes of training on {t.get('cpu', '?')} ({t.get('cpu_cores', '?')} CPU cores, no
accelerator), {t.get('steps', '?')} steps{'; ' + t['compute_note'] if t.get('compute_note') else ''}.

## Limitations and biases

{_limitations(t)}
"""


def _limitations(training):
    """The card's limitations: those of the bundled data sets (small, low-resolution images of a
    few classes), or, for a user's own folder, the general ones."""
    data = training.get("data_description", "its training data")
    if str(training.get("data", "")).startswith("folder:"):
        return (f"Trained on {data} only, at {training.get('recipe', {}).get('method_config', {}).get('image_size', '?')}"
                " px: the features describe images like those and transfer to other kinds of images only as far as "
                "they resemble them; evaluate on your own task before relying on them. A small data set and a "
                "short training budget make it far weaker than published encoders of the same method.")
    return (f"Trained on {data} only: small, low-resolution images of\n"
            "a few object classes. Features transfer poorly to other domains (faces, medical, aerial images)\n"
            "and to high resolutions without fine-tuning; upsampling 32 px training images means the\n"
            "encoder has never seen fine detail. A short CPU training budget makes it far weaker than\n"
            "published encoders of the same method; compare methods only at equal budgets.")


def render_imported_card(meta, load_as=None):
    """README.md of an encoder imported from a published checkpoint (zoo-import-weights): it
    credits the original authors, states their licence and the source file's sha256."""
    source, spec = meta["imported"], meta["input"]
    header = {"library_name": "keras", "license": "other", "license_name": source["license"],
              "pipeline_tag": "image-feature-extraction",
              "tags": ["self-supervised", "image-feature-extraction", meta["method"], "keras-ssl-zoo", "imported"]}
    if meta["training"].get("dataset"):
        header["datasets"] = [meta["training"]["dataset"]]
    crop = spec.get("eval_transform") or {}
    return f"""---
{yaml.safe_dump(header, sort_keys=False).strip()}
---

# {meta['name']}

A **{meta['method']}** self-supervised image encoder trained by its original authors
{f"({source['paper']})" if source.get('paper') else ""} and converted to Keras by keras-ssl-zoo's
`zoo-import-weights`: {backbone_text(meta['backbone'])}, torchvision's symmetric padding,
{meta['parameters']:,} parameters, {meta['feature_dim']}-d features. The weights are the authors' work,
used under their licence: **{source['license']}**. Credit and cite them, not this zoo.

## Source

- file: `{source['file']}` ({source['bytes']:,} bytes, sha256 `{source['sha256']}`)
- published at: {source.get('url') or 'not recorded'}
- layout: {source['format']} state dict, ResNet under the key prefix `{source['prefix']}`;
  {source['dropped_keys']} classifier / head / counter tensors dropped, {source['ignored_keys']} tensors outside
  the prefix ignored

## How to load and fine-tune

```python
{usage_code(meta, load_as).strip()}
```

Input: uint8 RGB, or float in 0..255, shape [N, H, W, 3]; images are resized to
{spec['image_size']} px, scaled to [0, 1] and normalised with mean {list(spec['mean'])} and std
{list(spec['std'])} inside the model. The original evaluation first resized the shorter side to
{crop.get('resize_shorter_side', '?')} px and centre-cropped {crop.get('center_crop', '?')} px: do that before
calling the encoder to reproduce it.

## Limitations

Converted, not retrained: the features are those of the original checkpoint (checked against
torchvision's ResNet to 1e-4 of their scale by the zoo's tests), with its training data's
biases. Evaluate on your own task before relying on it.
"""


def render_model_cards_md(metas, runs=None):
    lines = [
        "# Model cards",
        "",
        "Every pretrained encoder that ships with the package (`zoo.list_models()`), generated from",
        "`zoo/presets/*.json` by `python -m export.model_card` (a test fails when this file is stale).",
        "Accuracies are top-1 on the stated split; kNN: k=200, cosine, temperature 0.1;",
        "linear: softmax regression on frozen, standardised features. \"images seen\" counts source",
        "images (steps x batch); SimCLR makes 2 views of each, RotNet 4 rotations.",
        "",
        "| name | method | backbone | parameters | data | epochs | images seen | CPU | minutes | pretext metric at end | kNN top-1 (%) | linear top-1 (%) | split |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for m in metas:
        t = m["training"]
        res = {r["protocol"]: r for r in m["results"]}
        split = "; ".join(sorted({r["split"] for r in m["results"]})) or "-"
        lines.append(
            f"| `{m['name']}`{' (caveat)' if m.get('caveat') else ''} | {m['method']} | {m['backbone']['name']} w{m['backbone']['width']} | "
            f"{m['parameters']:,} | {t.get('dataset', '?')} | {t.get('epochs', '?')} | {t.get('images_seen', 0):,} | "
            f"{t.get('cpu', '?')} ({t.get('cpu_cores', '?')} cores) | {t.get('minutes', '?')} | "
            f"{_pretext(t.get('final_pretext_metrics'))} | "
            f"{_pct(res['knn']['top1']) if 'knn' in res else '-'} | "
            f"{_pct(res['linear']['top1']) if 'linear' in res else '-'} | {split} |")
    lines += ["", "## Reproduce", ""]
    for m in metas:
        note = m["training"].get("compute_note")
        lines += [f"### `{m['name']}`", "", *([f"**Caveat:** {m['caveat']}", ""] if m.get("caveat") else []),
                  *([f"Minutes: {note}.", ""] if note else []), "```bash",
                  m["training"].get("command", ""),
                  *[r["command"] for r in m["results"] if r.get("command")][:1], "```", ""]
    return "\n".join(lines + _other_runs_section(runs or [])).rstrip() + "\n"


def _pretext(metrics):
    """The pretext task's own metrics at the end of training (train batches of the last epoch):
    accuracies in %, other quantities (distances, errors) as they are."""
    return ", ".join(f"{k.replace('_', ' ')} {_pct(v) + ' %' if 'accuracy' in k else f'{v:.4g}'}"
                     for k, v in sorted((metrics or {}).items())) or "-"


def other_runs(root, shipped):
    """Rows for the committed run folders under `root` that were evaluated but not shipped
    (ablations such as RotNet's rotation sets): same split, same protocols."""
    from trainers.runs import final_pretext_metrics, read_eval, read_recipe, train_command
    rows = []
    for run in sorted(os.listdir(root)) if os.path.isdir(root) else []:
        run_dir = os.path.join(root, run)
        if run in shipped or not os.path.exists(os.path.join(run_dir, "eval.json")):
            continue
        report, recipe = read_eval(run_dir), read_recipe(run_dir)
        seconds, pretext = final_pretext_metrics(run_dir)
        rows.append({"run": f"{os.path.basename(root)}/{run}", "method": recipe["method"],
                     "method_config": recipe.get("method_config", {}), "epochs": recipe["epochs"],
                     "minutes": round(seconds / 60, 1), "pretext": pretext, "report": report,
                     "train_command": train_command(f"{os.path.basename(root)}/{run}", recipe)})
    return rows


def _other_runs_section(rows):
    if not rows:
        return []
    lines = ["", "## Other measured runs (not shipped)", "",
             "Trained with the same data, split, backbone and epochs as the shipped encoders and evaluated",
             "the same way, but not shipped: ablations, and earlier recipes that a shipped encoder's recipe",
             "replaced (docs/DESIGN_NOTES.md, notes 21-22). Their logs and configs are committed under `runs/`. Minutes are",
             "wall-clock summed over epochs on the shared 2-core machine, usually beside other work.", "",
             "| run | method | method config | epochs | minutes | pretext metric at end | kNN top-1 (%) | linear top-1 (%) | split |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        rep, mc = r["report"], r["method_config"]
        config = ", ".join(f"{k}={v}" for k, v in mc.items() if k not in ("backbone", "width", "image_size"))
        lines.append(f"| `{r['run']}` | {r['method']} | {config or '-'} | {r['epochs']} | {r['minutes']} | "
                     f"{_pretext(r['pretext'])} | {_pct(rep['knn']['top1']) if 'knn' in rep else '-'} | "
                     f"{_pct(rep['linear']['top1']) if 'linear' in rep else '-'} | {rep['split_description']} |")
    lines += ["", "Reproduce:", "", "```bash"]
    for r in rows:
        lines += [r["train_command"], r["report"].get("command", "")]
    return lines + ["```"]


def final_layer(run_dir):
    """How a run's eval.json (the encoder's own features) is named among its per-block probes:
    "stage4" for a ResNet (its features are pooled stage 4); "final" for a ViT (its features are
    the last block's tokens after the final LayerNorm, which no `--layer blockK` probes)."""
    from trainers.runs import RunError, read_recipe
    from zoo.registry import get_method
    try:
        recipe = read_recipe(run_dir)
        backbone = (recipe.get("method_config") or {}).get("backbone") or get_method(recipe["method"]).Config.backbone
    except (RunError, KeyError, ValueError):
        return "stage4"
    return "final" if str(backbone).startswith("vit") else "stage4"


def _block_number(layer):
    """stem 0, stage2 2, block10 10: the probes of a run from the input to the output (file
    names sort block10 before block2)."""
    digits = "".join(c for c in str(layer) if c.isdigit())
    return int(digits) if digits else 0


def layer_probes(root):
    """Rows of the per-block probe reports (`zoo-eval RUN --layer stageK` -> RUN/eval-stageK.json;
    a ViT's `--layer blockK`), each run's from the input to the output, its final features last."""
    from trainers.runs import read_layer_evals
    rows = []
    for run in sorted(os.listdir(root)) if os.path.isdir(root) else []:
        reports = read_layer_evals(os.path.join(root, run))
        final = final_layer(os.path.join(root, run))
        reports = sorted(reports, key=lambda item: ("layer" not in item[1], _block_number(item[1].get("layer"))))
        for _, report in reports:
            layer = report.get("layer", "stage4 (final)" if final == "stage4" else final)
            rows.append(dict(report, run=f"{os.path.basename(root)}/{run}", layer=layer))
    return rows


# What each paper reports on a setting comparable to ours, and what differs.
_MODERN_REFERENCES = ("References at far larger budgets, ResNet-18 at full width (11 M parameters) on CIFAR-10: lightly's benchmark "
    "(lightly-ai/lightly docs/source/getting_started/benchmarks.rst, kNN on the test set, batch 128, one GPU) and "
    "solo-learn's 1000-epoch table (online linear). Ours: ResNet-18 at width 0.25 (0.7 M parameters), 12 epochs "
    "on 45k images, kNN and linear probes on the 5k held-out val images.")
PAPER_FIGURES = {
    "rotation": "RotNet (Gidaris et al. 2018, table 1 and section 3.2): CIFAR-10 test, a 4-block "
                "network-in-network trained 200 epochs (official config) on all 50k train images, non-linear classifier on block-2 "
                "features: 4 rotations 89.06, 8 rotations 88.51, 2 rotations 0/180 87.46, 90/270 85.52. Ours: "
                "ResNet-18 at width 0.25, 12 epochs on 45k images, kNN and linear probes on pooled features of "
                "held-out train images (linear val: 4 rotations 59.42, 0/180 57.24, 8 rotations 54.02, 90/270 49.44; runs/rotation_set-*). "
                "As in the paper, 4 rotations are best and 90/270 worst; unlike it, 8 rotations fall below 0/180 here. "
                "The gap to the paper is the classifier (non-linear on full maps vs linear on pooled features), width and epochs.",
    "exemplar": "Exemplar-CNN (Dosovitskiy et al. 2014): 82.0 on CIFAR-10 test, with a 3-conv-layer network "
                "trained on surrogate classes from 96 px STL-10 unlabelled images and an SVM on features pooled "
                "from all its layers, trained on all 50k CIFAR-10 train images. Ours: CIFAR-10 32 px seeds, "
                "ResNet-18 at width 0.25 with the equal image budget, kNN and linear probes on the final pooled "
                "features only.",
    "dim": "DIM (Hjelm et al. 2019, table 1): DIM(L) with the InfoNCE estimator, 75.2 on CIFAR-10 test from "
           "the conv-layer features of their DCGAN-style encoder, with a small one-hidden-layer classifier, "
           "trained on all 50k images for far more epochs. Ours: DIM(L) InfoNCE on stage 3 of ResNet-18 at width 0.25, 12 "
           "epochs on 45k images, linear and kNN probes on pooled features.",
    "amdim": "AMDIM (Bachman et al. 2019, table 1): 91.2 linear on CIFAR-10 test with their purpose-built "
             "encoder, far wider than ours, trained on all 50k images for far more epochs. Ours: "
             "ResNet-18 at width 0.25 (0.7 M parameters), 12 epochs on 45k images.",
    "cpc": "CPC (van den Oord et al. 2018) and CPC v2 (Henaff et al. 2019) report ImageNet only (v2: 71.5 "
           "linear top-1 with a ResNet-161 on grids of overlapping 64 px patches), so there is no CIFAR-10 figure to "
           "set beside ours. Their linear evaluation pools the encoder's features over the patch grid; ours "
           "encodes the whole 32 px image, a scale the encoder (trained on 8 px patches) never saw in training.",
    "jigsaw": "Jigsaw puzzles (Noroozi & Favaro 2016) report no CIFAR-10 figure: they pre-train an AlexNet on "
              "ImageNet with 64 px tiles cut from 225 px crops and evaluate by fine-tuning on PASCAL VOC, so there is "
              "nothing comparable to set beside ours. Ours cuts 8 px tiles from 32 px images (resampled, design "
              "note 22) and probes the frozen encoder on whole images: at that tile size it stays near the untrained "
              "floor (its card's caveat; the exact-pixel and upsampled runs under Other measured runs).",
    "relative_patch": "Relative patch location (Doersch et al. 2015) reports no CIFAR-10 figure: 96 px patches of "
                      "ImageNet images, evaluated by fine-tuning (R-CNN detection on PASCAL VOC) and by nearest-neighbour "
                      "retrieval of patches. Ours cuts 7 px patches from 32 px images (resampled, design note 22) and "
                      "probes whole images, where it stays near the untrained floor (its card's caveat).",
    "byol": "BYOL (Grill et al. 2020) reports ImageNet (74.3 linear, ResNet-50). lightly: kNN 86.9 at 200 epochs, 91.0 at 800; solo-learn: 92.6 linear at 1000 epochs. " + _MODERN_REFERENCES,
    "simsiam": "SimSiam (Chen & He 2021, CIFAR-10 section: 91.8 linear, ResNet-18 variant, 800 epochs). lightly: kNN 90.4 at 800 epochs; solo-learn: 90.5 linear at 1000. " + _MODERN_REFERENCES,
    "barlow_twins": "Barlow Twins (Zbontar et al. 2021) reports ImageNet (73.2 linear, ResNet-50). solo-learn: 92.1 linear at 1000 epochs. " + _MODERN_REFERENCES,
    "vicreg": "VICReg (Bardes et al. 2022) reports ImageNet (73.2 linear, ResNet-50). solo-learn: 92.1 linear at 1000 epochs. " + _MODERN_REFERENCES,
    "swav": "SwAV (Caron et al. 2020) reports ImageNet (75.3 linear with multi-crop, ResNet-50). lightly: kNN 88.4 at 800 epochs; solo-learn: 89.2 linear at 1000. " + _MODERN_REFERENCES,
    "deepcluster": "DeepCluster (Caron et al. 2018) reports no CIFAR-10 figure: it trains an AlexNet or VGG-16 with "
                   "Sobel input on ImageNet (k = 10,000, 500 epochs) and evaluates linear probes on ImageNet and Places and "
                   "transfer to Pascal VOC. Re-run as a clustering method on CIFAR-10 (IIC, Ji et al. 2019, table 1, ResNet-34; "
                   "as listed by Papers with Code): 37.4 Hungarian-matched clustering accuracy. Ours: ResNet-18 at width 0.25, RGB input, k = 100, 12 "
                   "epochs on 45k images.",
    "deepclusterv2": "DeepCluster v2 (Caron et al. 2020, in the SwAV paper) reports ImageNet (75.2 linear, ResNet-50, 800 epochs, multi-crop). solo-learn: 88.9 linear on CIFAR-10 at 1000 epochs. " + _MODERN_REFERENCES,
    "dino": "DINO (Caron et al. 2021) reports ImageNet (ViT and ResNet-50, 75.3 linear). solo-learn: 89.5 linear at 1000 epochs. " + _MODERN_REFERENCES,
    "nnclr": "NNCLR (Dwibedi et al. 2021) reports ImageNet (75.4 linear, ResNet-50). solo-learn: 91.9 linear at 1000 epochs. " + _MODERN_REFERENCES,
    "mocov3": "MoCo v3 (Chen, Xie & He 2021) reports ImageNet (ViT; 73.8 linear with ResNet-50). solo-learn: 93.1 linear at 1000 epochs. " + _MODERN_REFERENCES,
    "iic": "IIC (Ji, Henriques & Vedaldi 2019, table 1) is a clustering method first: Hungarian-matched clustering "
           "accuracy of the lowest-loss sub-head, 61.7 on CIFAR-10 and 59.6 on STL-10 (fully unsupervised, a ResNet-34-like "
           "trunk with Sobel input, 2000 epochs). Ours: ResNet-18 at width 0.25, RGB input, 12 epochs on 45k images; "
           "its clustering accuracy on val belongs beside these, kNN and linear beside the other methods.",
    "colorization": "Colorization (Zhang, Isola & Efros 2016) reports no CIFAR-10 figure: it trains a VGG-style "
                    "network (and an AlexNet for the feature-learning tests) on ImageNet, L input, 313 ab bins, and "
                    "evaluates linear probes per layer on ImageNet and transfer to PASCAL VOC classification, detection "
                    "and segmentation (its section 3.2). Ours: ResNet-18 at width 0.25, L input (the encoder converts "
                    "RGB itself), 261 ab bins, 12 epochs on 45k images; the per-block probes belong beside its per-layer table.",
    "supcon": "SupCon (Khosla et al. 2020): 96.0 on CIFAR-10 test with ResNet-50 and labels, batch 1024, "
              "long training. Ours uses the labels of the 45k train images too (it is supervised), at "
              "ResNet-18 width 0.25 for 12 epochs; its numbers are an upper reference for the unsupervised rows, "
              "not a self-supervised result.",
}


def _random_init_section(repo_root):
    """The floor: the same backbone untrained (benchmarks/random_init_baseline.py)."""
    path = os.path.join(repo_root, "benchmarks", "results", "random_init_cifar10.json")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        report = json.load(f)
    knn = [r["knn_top1"] for r in report["runs"]]
    linear = [r["linear_top1"] for r in report["runs"]]
    return ["", "## The floor: an untrained encoder", "",
            f"The same backbone ({report['backbone']}) at random initialisation, {len(knn)} seeds, evaluated the "
            f"same way on the same split ({report['split']}): kNN top-1 {_span(knn)} %, linear top-1 {_span(linear)} %. "
            "A method whose numbers are near these learned little that transfers to whole-image classification.",
            "", "```bash", report["command"], "```"]


def _time_to_accuracy_section(repo_root):
    """benchmarks/time_to_accuracy.py's table and plot, under a heading of this file's level."""
    path = os.path.join(repo_root, "benchmarks", "results", "time_to_accuracy.md")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        table = f.read().strip().split("\n")
    heading = table[0].lstrip("# ")
    return ["", f"## {heading}", "",
            "Which method learns most per CPU-minute at this scale: every shipped run's val kNN per epoch "
            "against images seen and against CPU-minutes of a quiet machine "
            "([plot](benchmarks/results/time_to_accuracy.png)). The older runs measured kNN every 4 epochs, "
            "the modern ones (BYOL and after) every epoch, so the older curves are drawn straight from the "
            "untrained point to epoch 4 and their early budgets read low.", "",
            "```bash", "python benchmarks/time_to_accuracy.py --measure   # step times, one process, quiet machine",
            "python benchmarks/time_to_accuracy.py --step-times benchmarks/results/step_times_STAMP.json", "```",
            *table[1:]]


def run_protocol_reports(run_dir):
    """Every protocol's latest result of a run's final features: eval.json (knn, linear) and the
    reports of the other protocols (eval-mlp.json, eval-cluster.json, eval-finetune.json, ...),
    merged into one {protocol: result}; block reports (eval-stageK.json) are not among them."""
    from trainers.evaluate import PROTOCOLS
    merged = {}
    names = sorted(n for n in os.listdir(run_dir) if n.startswith("eval") and n.endswith(".json"))
    for name in names:
        with open(os.path.join(run_dir, name)) as f:
            report = json.load(f)
        if not report.get("layer"):
            merged.update({p: report[p] for p in PROTOCOLS if p in report})
    return merged


def _finetune_top1(result, fraction, key):
    for entry in (result or {}).get("subsets", []):
        if abs(entry["fraction"] - fraction) < 1e-9:
            return entry[key]["top1"]
    return None


def _cluster_cell(cluster):
    return f"{_pct(cluster['accuracy'])} / {cluster['nmi']:.3f}" if cluster else "-"


def _leaderboard_section(metas, repo_root):
    """One row per shipped encoder, one column per protocol (a '-' where it was not run yet)."""
    from trainers.runs import read_layer_evals
    runs = os.path.join(repo_root, "runs")
    floor_path = os.path.join(repo_root, "benchmarks", "results", "random_init_cifar10.json")
    lines = ["", "## Leaderboard", "",
             "Every shipped encoder under every protocol of `zoo-eval` on the same split (val: 5,000 CIFAR-10 train",
             "images held out, seed 0): kNN, linear and MLP probes on frozen features, fine-tuning of the whole",
             "network on 1 % and 10 % of the train labels (the same class-balanced images for every encoder), the",
             "best block's linear probe, and k-means with k = 10 on val (Hungarian-matched accuracy / NMI). '-':",
             "not measured yet (`benchmarks/leaderboard.sh` runs what is missing).", "",
             "| encoder | labels | kNN | linear | MLP | fine-tune 1 % | fine-tune 10 % | best block (linear) | cluster acc / NMI |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    random_init = {}
    for m in metas:
        run_dir = os.path.join(runs, m["name"])
        reports = run_protocol_reports(run_dir) if os.path.isdir(run_dir) else {}
        fine = reports.get("finetune")
        for fraction in (0.01, 0.1):
            if fine and _finetune_top1(fine, fraction, "random_init") is not None:
                random_init[fraction] = _finetune_top1(fine, fraction, "random_init")
        blocks = [(r.get("linear", {}).get("top1", 0), r.get("layer", final_layer(run_dir))) for _, r in
                  read_layer_evals(run_dir)] if os.path.isdir(run_dir) else []
        best = max(blocks) if blocks else None
        cluster = reports.get("cluster")
        lines.append(
            f"| `{m['name']}` | {'yes' if m['method'] in ('supcon', 'triplet') else 'no'} | "
            f"{_pct(reports['knn']['top1']) if 'knn' in reports else '-'} | "
            f"{_pct(reports['linear']['top1']) if 'linear' in reports else '-'} | "
            f"{_pct(reports['mlp']['top1']) if 'mlp' in reports else '-'} | "
            + " | ".join(_pct(v) if (v := _finetune_top1(fine, f, "encoder")) is not None else "-" for f in (0.01, 0.1))
            + f" | {f'{_pct(best[0])} ({best[1]})' if best else '-'} | "
            f"{_cluster_cell(cluster)} |")
    if os.path.exists(floor_path):
        with open(floor_path) as f:
            floor = json.load(f)["runs"]
        lines.append(f"| untrained ({len(floor)} seeds) | - | {_span([r['knn_top1'] for r in floor])} | "
                     f"{_span([r['linear_top1'] for r in floor])} | - | "
                     + " | ".join(_pct(random_init[f]) if f in random_init else "-" for f in (0.01, 0.1))
                     + " | - | - |")
    return lines


def _paper_section(methods):
    notes = [f"- **{m}**: {PAPER_FIGURES[m]}" for m in sorted(methods) if m in PAPER_FIGURES]
    return ["", "## Beside the papers", "", *notes] if notes else []


def block_floors(repo_root):
    """Rows of the untrained floor per block (benchmarks/random_init_baseline.py --layer stageK ->
    benchmarks/results/random_init_cifar10-stageK.json): kNN and linear ranges over the seeds."""
    folder = os.path.join(repo_root, "benchmarks", "results")
    rows = []
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        if name.startswith("random_init_cifar10-") and name.endswith(".json"):
            with open(os.path.join(folder, name)) as f:
                report = json.load(f)
            runs = report["runs"]
            rows.append({"layer": report["layer"], "feature_dim": runs[0].get("feature_dim", "?"), "seeds": len(runs),
                         "knn": _span([r["knn_top1"] for r in runs]), "linear": _span([r["linear_top1"] for r in runs]),
                         "split": report["split"], "command": report["command"]})
    return rows


def _span(values):
    return f"{_pct(min(values))}-{_pct(max(values))}"


def _layer_probe_section(rows, floors=()):
    if not rows:
        return []
    lines = ["", "## Per-block probes", "",
             "Globally average-pooled features of each ResNet stage (`zoo-eval RUN --layer stageK`; of a",
             "ViT: the mean-pooled tokens of each transformer block, `--layer blockK`); the",
             "RotNet paper reports its best CIFAR-10 numbers on block 2 of 4. The untrained rows are the",
             "floor of each block: the same backbone at random initialisation, probed the same way.", "",
             "| run | block | feature dim | kNN top-1 (%) | linear top-1 (%) | split | command |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for f in floors:
        lines.append(f"| untrained ({f['seeds']} seeds) | {f['layer']} | {f['feature_dim']} | {f['knn']} | "
                     f"{f['linear']} | {f['split']} | `{f['command']}` |")
    for r in rows:
        lines.append(f"| `{r['run']}` | {r['layer']} | {r['feature_dim']} | "
                     f"{_pct(r['knn']['top1']) if 'knn' in r else '-'} | "
                     f"{_pct(r['linear']['top1']) if 'linear' in r else '-'} | {r['split_description']} | "
                     f"`{r.get('command', '')}` |")
    return lines


def model_cards_md(runs_root=None):
    """MODEL_CARDS.md as `python -m export.model_card` writes it."""
    metas = registered_metadata()
    root = runs_root or os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "runs")
    text = render_model_cards_md(metas, other_runs(root, {m["name"] for m in metas}))
    text = "\n".join([text.rstrip(), *_leaderboard_section(metas, os.path.dirname(root)),
                      *_random_init_section(os.path.dirname(root)),
                      *_time_to_accuracy_section(os.path.dirname(root))])
    methods = {m["method"] for m in metas}
    return "\n".join([text.rstrip(), *_layer_probe_section(layer_probes(root), block_floors(os.path.dirname(root))),
                      *_paper_section(methods)]).rstrip() + "\n"


def registered_metadata():
    from zoo.hub import _presets
    return [meta for _, (meta, _) in sorted(_presets().items())]


def main(argv=None):
    p = argparse.ArgumentParser(description="Regenerate MODEL_CARDS.md from zoo/presets/.")
    p.add_argument("--out", default="MODEL_CARDS.md")
    p.add_argument("--card", help="print the model card of one export folder's metadata.json instead")
    args = p.parse_args(argv)
    if args.card:
        with open(args.card) as f:
            print(render_model_card(json.load(f)))
        return
    with open(args.out, "w") as f:
        f.write(model_cards_md())
    print(f"wrote {os.path.abspath(args.out)}")


if __name__ == "__main__":
    main()
