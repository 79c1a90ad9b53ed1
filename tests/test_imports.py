"""The import graph of the zoo package, read from the source with `ast` (nothing is imported):

- a method file imports only zoo.methods.base and the shared modules, never another method
  (zoo/methods/__init__.py imports every method to register it);
- no import cycle among zoo's modules;
- zoo/ imports nothing from trainers/ or export/ (the CLIs use the library, not the other way).

Every import statement counts, also those inside functions. `from zoo import x` is an import
of the module zoo.x when there is one, else of zoo/__init__.py.
"""
import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "zoo"

# Imports of trainers/ or export/ by zoo/ that are known and wait for their fix (module ->
# imported modules). Remove an entry when it is fixed: the test fails while an entry is stale.
KNOWN_CLI_IMPORTS = {}


def package_modules(package=PACKAGE):
    """{dotted module name: path} of every .py file under `package` (zoo/__init__.py is "zoo")."""
    modules = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def import_statements(path, name):
    """(module, [imported names]) of every import statement of the file, with relative imports
    made absolute: `import a.b` -> ("a.b", []), `from a import b, c` -> ("a", ["b", "c"])."""
    statements = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            statements += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the file's own package, one package up per extra dot
                package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                package = package[:len(package) - (node.level - 1)]
                base = ".".join(package + ([base] if base else []))
            statements.append((base, [alias.name for alias in node.names]))
    return statements


def import_graph(modules):
    """{module: set of the package's modules it imports}: `from a import b` imports the module a.b
    if there is one, else a (a's __init__); `import a.b` imports a.b."""
    graph = {}
    for name, path in modules.items():
        targets = set()
        for module, names in import_statements(path, name):
            if not names:
                targets.add(module)
            for imported in names:
                targets.add(f"{module}.{imported}" if f"{module}.{imported}" in modules else module)
        graph[name] = (targets & set(modules)) - {name}
    return graph


def find_cycles(graph):
    """The cycles a depth-first search meets, each as a list of modules whose first is its last."""
    state, stack, cycles = {}, [], []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return cycles


def test_find_cycles_on_hand_made_graphs():
    assert find_cycles({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": set(), "b": {"b"}}) == [["b", "b"]]


def test_import_graph_resolves_package_relative_and_from_imports(tmp_path):
    files = {
        "pkg/__init__.py": "import os\n",
        "pkg/losses.py": "from pkg import methods\n",
        "pkg/methods/__init__.py": "from . import a\nfrom .base import Method\n",
        "pkg/methods/a.py": "from pkg import losses, VERSION\nfrom ..losses import f\n"
                            "def g():\n    import pkg.methods.base\n",
        "pkg/methods/base.py": "from pkg.losses import gather\nimport numpy\n",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    modules = package_modules(tmp_path / "pkg")
    assert sorted(modules) == ["pkg", "pkg.losses", "pkg.methods", "pkg.methods.a", "pkg.methods.base"]
    graph = import_graph(modules)
    assert graph == {"pkg": set(), "pkg.losses": {"pkg.methods"},
                     "pkg.methods": {"pkg.methods.a", "pkg.methods.base"},
                     "pkg.methods.a": {"pkg", "pkg.losses", "pkg.methods.base"},
                     "pkg.methods.base": {"pkg.losses"}}
    # Both circles through pkg.losses, as the depth-first search meets them (neighbours in sorted order).
    assert find_cycles(graph) == [["pkg.losses", "pkg.methods", "pkg.methods.a", "pkg.losses"],
                                  ["pkg.losses", "pkg.methods", "pkg.methods.a", "pkg.methods.base", "pkg.losses"]]


def test_a_method_imports_no_other_method():
    graph = import_graph(package_modules())
    methods = {m for m in graph if m.startswith("zoo.methods.")} - {"zoo.methods.base"}
    assert {"zoo.methods.simclr", "zoo.methods.pirl"} <= methods
    offending = {m: sorted(graph[m] & methods) for m in sorted(methods) if graph[m] & methods}
    assert offending == {}, ("method files import other methods; move the shared pieces to zoo.losses, "
                             f"zoo.heads, zoo.patches or zoo.memory_bank: {offending}")


def test_zoo_has_no_import_cycle():
    graph = import_graph(package_modules())
    assert {"zoo.losses.replicas", "zoo.losses.siamese"} <= graph["zoo.losses"]  # sees the package's own imports
    assert find_cycles(graph) == []


def test_zoo_imports_nothing_from_trainers_or_export():
    found = {}
    for name, path in package_modules().items():
        cli = {module for module, _ in import_statements(path, name) if module.split(".")[0] in ("trainers", "export")}
        if cli:
            found[name] = cli
    unexpected = {m: sorted(cli - KNOWN_CLI_IMPORTS.get(m, set())) for m, cli in found.items()
                  if cli - KNOWN_CLI_IMPORTS.get(m, set())}
    assert unexpected == {}, f"zoo/ modules import trainers/ or export/: {unexpected}"
    stale = {m: sorted(cli - found.get(m, set())) for m, cli in KNOWN_CLI_IMPORTS.items() if cli - found.get(m, set())}
    assert stale == {}, f"fixed: remove these from KNOWN_CLI_IMPORTS in tests/test_imports.py: {stale}"


# --- the whole project: zoo, trainers, export ---------------------------------------------------

ROOT = PACKAGE.parent
PACKAGES = ("zoo", "trainers", "export")
# Allowed direction between the packages: trainers and export use zoo; export uses trainers (a
# run folder, its recipe, the CLIs' error line, the folder lock; export/quickstart.py runs the
# whole path); zoo uses neither.


def project_graph():
    modules = {}
    for package in PACKAGES:
        modules.update(package_modules(ROOT / package))
    return import_graph(modules)


def package_graph(graph, ignore=None):
    """{package: set of the other packages its modules import}, leaving out the module imports
    listed in `ignore` ({module: set of imported modules})."""
    packages = {}
    for module, targets in graph.items():
        kept = {t.split(".")[0] for t in targets - (ignore or {}).get(module, set())}
        packages.setdefault(module.split(".")[0], set()).update(kept - {module.split(".")[0]})
    return packages


def test_package_graph_on_a_hand_made_graph():
    graph = {"a.x": {"b.y", "a.z"}, "a.z": set(), "b.y": {"c"}, "c": {"a.z"}}
    assert package_graph(graph) == {"a": {"b"}, "b": {"c"}, "c": {"a"}}
    assert package_graph(graph, ignore={"c": {"a.z"}}) == {"a": {"b"}, "b": {"c"}, "c": set()}
    assert find_cycles(package_graph(graph)) == [["a", "b", "c", "a"]]


def test_no_import_cycle_between_the_modules_of_zoo_trainers_and_export():
    graph = project_graph()
    # sees imports inside functions and `from package import module`
    assert {"trainers.runs", "export.saved_model"} <= graph["export.cli"]
    assert "trainers.recipes" in graph["trainers.train"]
    cycles = find_cycles(graph)
    assert cycles == [], "import cycles (give the shared piece its own module): " + "; ".join(
        " -> ".join(cycle) for cycle in cycles)


def test_no_import_cycle_between_the_packages_zoo_trainers_and_export():
    graph = project_graph()
    packages = package_graph(graph)
    assert set(packages) == set(PACKAGES)
    assert packages["zoo"] == set(), f"zoo imports {sorted(packages['zoo'])}"
    assert "trainers" not in packages["export"] or "export" not in packages["trainers"], (
        "trainers and export import each other: " + str(sorted(
            (m, sorted(t for t in ts if t.split('.')[0] in ('trainers', 'export') and t.split('.')[0] != m.split('.')[0]))
            for m, ts in graph.items() if m.split(".")[0] in ("trainers", "export")
            and any(t.split(".")[0] in ("trainers", "export") and t.split(".")[0] != m.split(".")[0] for t in ts))))
    assert find_cycles(packages) == []
