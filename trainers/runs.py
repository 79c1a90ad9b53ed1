"""Reading a run folder written by zoo-train: its recipe (config.yaml), its latest weights
(checkpoints/) and encoder, its per-epoch metrics (metrics.jsonl), its evaluation reports
(eval.json, eval-LAYER.json) and the command that reproduces it. zoo-eval, zoo-export and the
model cards read runs only through this module."""
import json
import os
import shlex

import yaml

from trainers.callbacks import latest_checkpoint
from trainers.recipes import default_recipe_path, load_recipe


class RunError(ValueError):
    pass


def read_recipe(run_dir):
    path = os.path.join(run_dir, "config.yaml")
    if not os.path.exists(path):
        raise RunError(f"{run_dir} is not a zoo-train run folder (no config.yaml). "
                       "Pass the --out folder of a zoo-train run.")
    with open(path) as f:
        try:
            recipe = yaml.safe_load(f)
        except yaml.YAMLError as e:
            raise RunError(f"{path} is not valid YAML ({' '.join(str(e).split())}); restore it from the "
                           "command that trained the run.") from None
    if not isinstance(recipe, dict) or "method" not in recipe:
        raise RunError(f"{path} holds no zoo-train recipe (no method: field).")
    return recipe


def load_run(run_dir):
    """(recipe, method with the latest checkpoint's weights, step)."""
    from trainers.train import build_method
    recipe = read_recipe(run_dir)
    path, step = latest_checkpoint(os.path.join(run_dir, "checkpoints"))
    if path is None:
        raise RunError(f"{run_dir} has no checkpoint yet; train it first (zoo-train ... --out {run_dir}).")
    method = build_method(recipe)
    # The checkpoint also holds optimizer slots, which a bare method has no use for.
    _load_model_weights(method, path)
    from trainers.callbacks import nonfinite_variables
    bad = nonfinite_variables(method.weights)
    if bad:
        raise RunError(f"{path} holds NaN or inf weights ({len(bad)} variables, first {bad[0]}): the run "
                       "diverged. Train it again with a lower learning rate.")
    return recipe, method, step


def _load_model_weights(method, path):
    import warnings
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*optimizer.*")
        method.load_weights(path)


def run_encoder(run_dir):
    """The run's encoder as an ImageEncoder (uint8 / 0..255 images of any size -> features)."""
    from zoo.encoder import ImageEncoder
    recipe, method, step = load_run(run_dir)
    encoder = ImageEncoder(method.encoder, method.config.image_size, name=f"{recipe['method']}_encoder")
    return recipe, method, encoder, step


def read_eval(run_dir):
    """The report of `zoo-eval RUN` (eval.json), or None."""
    path = os.path.join(run_dir, "eval.json")
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    return None


def read_layer_evals(run_dir):
    """[(file name, report)] of the per-block reports (`zoo-eval RUN --layer stageK` ->
    eval-stageK.json), sorted by name, then eval.json (the final block) if there are any. The
    reports of the protocols the card does not read from there (eval-cluster.json,
    eval-stageK-mlp.json, eval-mlp-finetune.json, ...) are not among them."""
    # a block's report is eval-LAYER.json (one name part) and says which layer it probed
    names = sorted(n for n in os.listdir(run_dir) if n.startswith("eval-") and n.endswith(".json")
                   and "-" not in n[len("eval-"):]) if os.path.isdir(run_dir) else []
    reports = []
    for name in names:
        with open(os.path.join(run_dir, name)) as f:
            report = json.load(f)
        if "layer" in report:
            reports.append((name, report))
    if reports:
        with open(os.path.join(run_dir, "eval.json")) as f:
            reports.append(("eval.json", json.load(f)))
    return reports


def final_pretext_metrics(run_dir):
    """(training seconds summed over epochs, the pretext metrics of the last epoch) of a run,
    from its metrics.jsonl."""
    seconds, last = 0.0, {}
    metrics = os.path.join(run_dir, "metrics.jsonl")
    if os.path.exists(metrics):
        with open(metrics) as f:
            for line in f:
                if line.strip():
                    row = json.loads(line)
                    seconds += row.get("epoch_seconds", 0.0)
                    last = row
    skip = {"epoch", "step", "epoch_seconds", "loss", "val_knn_top1", "learning_rate"}
    return seconds, {k: round(v, 4) for k, v in last.items() if k not in skip and isinstance(v, (int, float))}


def train_command(run_dir, recipe):
    """The zoo-train command that reproduces a run: the method's CIFAR-10 recipe when the run
    used it unchanged, else the run's own config.yaml. Paths are shell-quoted (a folder may hold
    a space)."""
    kind = recipe["data"].split(":", 1)[0]
    default = load_recipe(recipe["method"])
    comparable = {k: v for k, v in recipe.items()}
    comparable["method_config"] = {k: v for k, v in recipe.get("method_config", {}).items() if k != "num_examples"}
    default["method_config"] = {k: v for k, v in default.get("method_config", {}).items() if k != "num_examples"}
    if kind == "cifar10-jpeg" and comparable == default:
        path = os.path.relpath(default_recipe_path(recipe["method"]), os.path.dirname(os.path.dirname(__file__)))
    else:
        path = os.path.join(run_dir, "config.yaml")
    return shlex.join(["zoo-train", recipe["method"], "--config", path, "--out", run_dir])
