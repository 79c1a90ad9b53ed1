"""Training recipes: YAML files in trainers/configs/, overridden by CLI flags or `--set k=v`.

`check_recipe` checks a whole recipe (keys, types, ranges, the method's config fields) before
anything is written, so a mistyped field is refused up front instead of after the run folder
exists."""
import copy
import dataclasses
import difflib
import math
import os
import types
import typing

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
# Fields a recipe may add to DEFAULTS' (absent from older run folders' config.yaml, so they
# are not defaults): see trainers.train.compile_method and train.
OPTIONAL = {"accumulate_steps": 1, "jit_compile": None, "mixed_precision": False, "max_nonfinite_steps": 0}
# optimizer fields read by trainers.train.compile_method; the others go to the optimizer's constructor.
TRAINER_OPTIMIZER_KEYS = {"name", "learning_rate", "weight_decay", "momentum", "warmup_epochs", "lr_scaling",
                          "base_batch"}


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
            try:
                loaded = yaml.safe_load(f) or {}
            except yaml.YAMLError as e:
                raise ValueError(f"recipe file {path} is not valid YAML: {' '.join(str(e).split())}") from None
        if not isinstance(loaded, dict):
            raise ValueError(f"recipe file {path} must be a mapping of fields (method:, data:, ...), "
                             f"not a {type(loaded).__name__}.")
        recipe = _merge(recipe, loaded)
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
        if not isinstance(node, dict):
            raise ValueError(f"--set {assignment!r}: {part!r} is not a group of fields.")
    try:
        node[parts[-1]] = yaml.safe_load(raw)
    except yaml.YAMLError as e:
        raise ValueError(f"--set {assignment!r}: the value is not valid YAML ({str(e).splitlines()[0]}).") from None
    return recipe


def _unknown(kind, key, known, fix):
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return ValueError(f"unknown {kind} {key!r}: {hint}known: {', '.join(sorted(known))}. {fix}")


def _number(value, where, kind=float, minimum=None, above=None, allow_none=False):
    """`value` as `kind` (YAML reads `1e-1` as a string, so numeric strings are converted),
    within the bounds; a ValueError naming `where` otherwise."""
    if value is None and allow_none:
        return None
    wanted = "an integer" if kind is int else "a number"
    converted = None
    if not isinstance(value, bool):
        try:
            converted = float(value) if isinstance(value, str) else value  # "1e3" too
            if kind is int and isinstance(converted, float) and converted.is_integer():
                converted = int(converted)
            if not isinstance(converted, int if kind is int else (int, float)):
                converted = None
        except ValueError:
            converted = None
    if converted is not None and kind is float:
        converted = float(converted) if math.isfinite(converted) else None
    if converted is None:
        raise ValueError(f"{where} = {value!r} must be {wanted}.")
    if minimum is not None and converted < minimum:
        raise ValueError(f"{where} = {value!r} must be at least {minimum}.")
    if above is not None and not converted > above:
        raise ValueError(f"{where} = {value!r} must be greater than {above}.")
    return converted


def _field_value(value, hint, where, default=None):
    """`value` converted to the dataclass field type `hint` (float, int, bool, str, tuple, and
    `X | None`); tuples stay YAML lists, their items converted to numbers when the field's
    `default` is a tuple of numbers."""
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    if value is None and type(None) in options:
        return None
    errors = []
    for kind in options:
        if kind is type(None):
            continue
        if kind in (int, float):
            try:
                return _number(value, where, kind)
            except ValueError as e:
                errors.append(str(e))
        elif kind is bool:
            if isinstance(value, bool):
                return value
            errors.append(f"{where} = {value!r} must be true or false.")
        elif kind is str:
            if isinstance(value, str):
                return value
            errors.append(f"{where} = {value!r} must be a string.")
        elif kind is tuple:
            if isinstance(value, (list, tuple)):
                numeric = bool(default) and all(isinstance(v, (int, float)) for v in default)
                # items keep int when the default's are all int (counts such as DeepCluster's prototypes)
                item = int if numeric and all(isinstance(v, int) for v in default) else float
                return [_number(v, f"{where}[{i}]", item) if numeric else v for i, v in enumerate(value)]
            errors.append(f"{where} = {value!r} must be a list, e.g. [0.08, 1.0].")
        else:
            return value
    raise ValueError(errors[0] if len(errors) == 1 else " or ".join(errors))


def check_method_config(method, config):
    """`config` (recipe["method_config"]) with every value converted to the type of the
    method's config field; an unknown field or a value of the wrong type is a ValueError."""
    from zoo.hub import MAX_WIDTH
    from zoo.registry import get_method
    cls = get_method(method).Config
    hints = typing.get_type_hints(cls)
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    fields = set(defaults)
    if not isinstance(config, dict):
        raise ValueError(f"method_config must be a mapping of {method}'s config fields, got {config!r}.")
    checked = {}
    for key, value in config.items():
        if key not in fields:
            raise _unknown(f"{method} config field", f"{key}", fields,
                           "Fix the --set method_config.KEY=VALUE or the recipe's method_config.")
        default = defaults[key] if isinstance(defaults[key], tuple) else None
        checked[key] = _field_value(value, hints[key], f"method_config.{key}", default)
    # Wider backbones do not fit in memory: refuse them here, before the run folder exists, with
    # the bound zoo.load applies to an export's metadata.
    if "width" in checked and not 0 < checked["width"] <= MAX_WIDTH:
        raise ValueError(f"method_config.width (--width) = {checked['width']:g} must be in (0, {MAX_WIDTH}] "
                         "(the backbone's channel multiplier: 1 is the standard ResNet, 0.125-0.5 train on a CPU).")
    return checked


def _optimizer_keys(name):
    """The optimizer fields a recipe may set for optimizer `name`: the trainer's and the
    constructor arguments of its class (and of keras.optimizers.Optimizer, e.g. clipnorm)."""
    import inspect

    import keras
    from zoo.optimizers import LARS
    cls = {"sgd": LARS, "lars": LARS, "adamw": keras.optimizers.AdamW, "lamb": keras.optimizers.Lamb,
           "adam": keras.optimizers.Adam}[name]
    keys = set(TRAINER_OPTIMIZER_KEYS)
    for klass in cls.__mro__:
        if "__init__" not in vars(klass) or klass is object:
            continue
        keys |= {p.name for p in inspect.signature(klass.__init__).parameters.values()
                 if p.kind is p.POSITIONAL_OR_KEYWORD or p.kind is p.KEYWORD_ONLY}
    return keys - {"self", "gradient_accumulation_steps", "exclude_from_layer_adaptation"}


def resolve_data(spec):
    """A plain folder path is `folder:PATH`; a path that does not exist is a clear error
    (instead of zoo.data's "unknown data spec"). Other specs are returned unchanged."""
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"data = {spec!r}: give a data spec: shapes | folder:PATH | cifar10-jpeg:PATH | tfds:NAME.")
    path = spec.partition("?")[0]
    kind = path.partition(":")[0]
    if kind in ("shapes", "folder", "cifar10-jpeg", "tfds"):
        return spec
    if os.path.isdir(spec) or os.path.isdir(path):
        return f"folder:{spec}"
    if os.sep in path or path.startswith((".", "~")):
        where = os.path.abspath(os.path.expanduser(path))
        what = "file" if os.path.exists(where) else "not found"
        if what == "file":
            raise ValueError(f"--data {spec!r}: {where} is a file; pass a folder of class sub-folders "
                             "(folder:PATH) or a CIFAR-10 archive as cifar10-jpeg:PATH.")
        raise ValueError(f"--data {spec!r}: {where} not found; pass an existing folder (folder:PATH) or "
                         "one of shapes, cifar10-jpeg:PATH, tfds:NAME.")
    return spec


def check_recipe(recipe):
    """Check every field of `recipe` and convert numeric strings (YAML reads `1e-1` as a
    string) to numbers, in place; returns it. A ValueError names the field and the fix."""
    if not isinstance(recipe, dict):
        raise ValueError(f"a recipe is a mapping of fields, got {type(recipe).__name__}.")
    known = set(DEFAULTS) | set(OPTIONAL)
    for key in recipe:
        if key not in known:
            raise _unknown("recipe field", key, known, "Fix the --set KEY=VALUE or the recipe file.")
    if not recipe.get("method"):
        raise ValueError("the recipe names no method; give one (zoo-train METHOD) or set `method:` in --config.")
    recipe["data"] = resolve_data(recipe.get("data"))
    recipe["epochs"] = _number(recipe["epochs"], "epochs (--epochs)", int, minimum=1)
    recipe["batch_size"] = _number(recipe["batch_size"], "batch_size (--batch-size)", int, minimum=1)
    recipe["seed"] = _number(recipe["seed"], "seed (--seed)", int, minimum=0)
    recipe["checkpoint_every_steps"] = _number(recipe["checkpoint_every_steps"], "checkpoint_every_steps", int,
                                               minimum=0)
    recipe["knn_every_epochs"] = _number(recipe["knn_every_epochs"], "knn_every_epochs", int, minimum=0)
    if "accumulate_steps" in recipe:
        recipe["accumulate_steps"] = _number(recipe["accumulate_steps"], "accumulate_steps (--accumulate-steps)",
                                             int, minimum=1, allow_none=True)
    if "max_nonfinite_steps" in recipe:
        recipe["max_nonfinite_steps"] = _number(recipe["max_nonfinite_steps"], "max_nonfinite_steps", int, minimum=0)
    for key in ("jit_compile", "mixed_precision"):
        if recipe.get(key) not in (None, True, False):
            raise ValueError(f"{key} = {recipe[key]!r} must be true or false.")

    optimizer = recipe.get("optimizer")
    if not isinstance(optimizer, dict):
        raise ValueError(f"optimizer must be a mapping (name, learning_rate, ...), got {optimizer!r}.")
    from zoo.optimizers import OPTIMIZERS
    if optimizer.get("name") not in OPTIMIZERS:
        raise ValueError(f"optimizer.name = {optimizer.get('name')!r}: choose one of {', '.join(OPTIMIZERS)}.")
    allowed = _optimizer_keys(optimizer["name"])
    for key in optimizer:
        if key not in allowed:
            raise _unknown(f"{optimizer['name']} optimizer field", key, allowed,
                           "Fix the --set optimizer.KEY=VALUE or the recipe.")
    optimizer["learning_rate"] = _number(optimizer.get("learning_rate"), "optimizer.learning_rate (--lr)", above=0)
    for key in ("weight_decay", "momentum", "warmup_epochs", "eta", "epsilon", "beta_1", "beta_2", "clipnorm",
                "clipvalue", "global_clipnorm"):
        if key in optimizer:
            optimizer[key] = _number(optimizer[key], f"optimizer.{key}", minimum=0, allow_none=True)
    if "base_batch" in optimizer:
        optimizer["base_batch"] = _number(optimizer["base_batch"], "optimizer.base_batch", int, minimum=1)
    if optimizer.get("lr_scaling") not in (None, "none", "linear", "sqrt"):
        raise ValueError(f"optimizer.lr_scaling = {optimizer['lr_scaling']!r}: choose none, linear or sqrt.")

    knn = recipe.get("knn")
    if not isinstance(knn, dict):
        raise ValueError(f"knn must be a mapping (k, temperature), got {knn!r}.")
    for key in knn:
        if key not in DEFAULTS["knn"]:
            raise _unknown("knn field", key, DEFAULTS["knn"], "Fix the --set knn.KEY=VALUE or the recipe.")
    if "k" in knn:
        knn["k"] = _number(knn["k"], "knn.k", int, minimum=1)
    if "temperature" in knn:
        knn["temperature"] = _number(knn["temperature"], "knn.temperature", above=0)
    recipe["method_config"] = check_method_config(recipe["method"], recipe.get("method_config") or {})
    return recipe
