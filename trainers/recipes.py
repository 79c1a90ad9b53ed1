"""Training recipes: YAML files in trainers/configs/, overridden by CLI flags or `--set k=v`."""
import copy
import os

import yaml

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "configs")

DEFAULTS = {
    "method": None,
    "data": "shapes",
    "method_config": {},
    "epochs": 10,
    "batch_size": 256,
    "optimizer": {"name": "sgd", "learning_rate": 0.1, "weight_decay": 5e-4, "momentum": 0.9,
                  "warmup_epochs": 0},
    "seed": 0,
    "checkpoint_every_steps": 200,
    "knn_every_epochs": 5,
    "knn": {"k": 200, "temperature": 0.1},
}


def _merge(base, update):
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def default_recipe_path(method):
    return os.path.join(CONFIG_DIR, f"{method}_cifar10.yaml")


def load_recipe(method=None, path=None):
    """DEFAULTS <- the recipe file (given, or `configs/<method>_cifar10.yaml` if it exists)."""
    recipe = copy.deepcopy(DEFAULTS)
    path = path or (default_recipe_path(method) if method else None)
    if path:
        if not os.path.exists(path):
            if method and path == default_recipe_path(method):
                path = None
            else:
                raise FileNotFoundError(f"Recipe file {path!r} does not exist; recipes live in {CONFIG_DIR}.")
    if path:
        with open(path) as f:
            recipe = _merge(recipe, yaml.safe_load(f) or {})
    if method:
        if recipe.get("method") not in (None, method):
            raise ValueError(f"Recipe {path} is for method {recipe['method']!r}, not {method!r}.")
        recipe["method"] = method
    return recipe


def set_value(recipe, assignment):
    """Apply `a.b.c=value` (value parsed as YAML) to a recipe."""
    if "=" not in assignment:
        raise ValueError(f"--set expects key=value, got {assignment!r} (example: --set optimizer.learning_rate=0.3).")
    key, raw = assignment.split("=", 1)
    node = recipe
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = yaml.safe_load(raw)
    return recipe
