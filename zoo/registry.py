"""The method registry: `@register_method("name")` on an SSLMethod subclass makes it
available to `zoo.create`, `zoo.list_methods` and the `zoo-train` CLI."""
import dataclasses
import difflib
import importlib

_METHODS = {}


def register_method(name):
    def decorator(cls):
        if name in _METHODS and _METHODS[name] is not cls:
            raise ValueError(f"Method {name!r} is registered twice ({_METHODS[name].__name__}, {cls.__name__}).")
        cls.method_name = name
        _METHODS[name] = cls
        return cls
    return decorator


def _load_all():
    importlib.import_module("zoo.methods")  # importing the package registers every method


def unknown_name_message(kind, name, known):
    close = difflib.get_close_matches(str(name), list(known), n=1, cutoff=0.5)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return f"Unknown {kind} {name!r}.{hint} Known: {', '.join(sorted(known)) or '(none)'}."


def get_method(name):
    """The SSLMethod subclass registered under `name`."""
    _load_all()
    if name not in _METHODS:
        raise ValueError(unknown_name_message("method", name, _METHODS) + " See zoo.list_methods().")
    return _METHODS[name]


def list_methods():
    """Names of all trainable methods, sorted."""
    _load_all()
    return sorted(_METHODS)


def create(name, config=None, **overrides):
    """Build the method `name` with its paper defaults, overridden by `config` fields/kwargs.

    >>> model = zoo.create("simclr", backbone="resnet18", width=0.25)
    """
    cls = get_method(name)
    fields = {f.name for f in dataclasses.fields(cls.Config)}
    if isinstance(config, dict):
        overrides = {**config, **overrides}
        config = None
    bad = sorted(set(overrides) - fields)
    if bad:
        raise ValueError(f"{name}: unknown config field(s) {bad}. Fields of {cls.Config.__qualname__}: {sorted(fields)}.")
    base = config if config is not None else cls.Config()
    return cls(dataclasses.replace(base, **overrides))
