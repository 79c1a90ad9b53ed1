"""Reading a run folder written by zoo-train: its recipe, its latest weights, its encoder."""
import json
import os

import yaml

from trainers.callbacks import latest_checkpoint


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
    path = os.path.join(run_dir, "eval.json")
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    return None
