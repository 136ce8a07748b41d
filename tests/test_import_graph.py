"""No import cycle among the project's modules (issue 15): the graph of top-level imports has none, and neither
has the graph that also counts imports written inside functions (a cycle hidden there is still a cycle). And the
layers of docs/design.md's package map (issue 25): the library never imports the app or the reports, nothing below
the figure builders imports them, and the library holds at most four command-line modules."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("lsr1_core", "explorer", "tools", "experiments")


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or \
        (isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _imports(tree: ast.Module, top_only: bool):
    """(level, module, names) of each import statement; ``top_only``: those executed when the module is
    imported (module level, inside module-level if/try, not under TYPE_CHECKING)."""
    found: list = []

    def visit(node, top):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                if top or not top_only:
                    found.extend((0, a.name, ()) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                if top or not top_only:
                    found.append((child.level, child.module or "", tuple(a.name for a in child.names)))
            elif isinstance(child, ast.If) and _is_type_checking(child):
                continue
            elif isinstance(child, ast.FunctionDef) and child.name == "__getattr__" and node is tree:
                # a module-level __getattr__ (PEP 562) runs only when a deprecated name is looked up on the
                # finished module — never while either module is being imported — so its lazy re-export (e.g.
                # checkpoints.load_model → learned.io.load_model) cannot form an import cycle
                continue
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
                visit(child, top and isinstance(child, ast.ClassDef))
            else:
                visit(child, top)

    visit(tree, True)
    return found


def _graph(top_only: bool) -> dict[str, set[str]]:
    mods = _modules()
    graph = {m: set() for m in mods}
    for name, path in mods.items():
        is_pkg = path.name == "__init__.py"
        here = name.split(".") if is_pkg else name.split(".")[:-1]
        for level, module, names in _imports(ast.parse(path.read_text()), top_only):
            base = here[:len(here) - (level - 1)] if level else []
            target = ".".join([*base, *([module] if module else [])])
            targets = [f"{target}.{n}" if f"{target}.{n}" in mods else target for n in names] or [target]
            for t in targets:
                while t and t not in mods:  # `import a.b.c` of a non-module attribute: its module
                    t = t.rpartition(".")[0]
                if not t or t == name:
                    continue
                # importing t also runs its packages' __init__ (those that are not the importer's own)
                parts = t.split(".")
                for i in range(1, len(parts) + 1):
                    dep = ".".join(parts[:i])
                    if dep in mods and dep != name and not (name + ".").startswith(dep + "."):
                        graph[name].add(dep)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def dfs(u):
        state[u] = 1
        stack.append(u)
        for v in sorted(graph[u]):
            if state.get(v) == 1:
                return stack[stack.index(v):] + [v]
            if v not in state:
                found = dfs(v)
                if found:
                    return found
        stack.pop()
        state[u] = 2
        return None

    for u in sorted(graph):
        if u not in state:
            found = dfs(u)
            if found:
                return found
    return None


def test_the_graph_sees_the_project():
    g = _graph(top_only=True)
    assert "lsr1_core.learned.io" in g["lsr1_core.learned.solver"]
    assert "lsr1_core.meta.train" in g["lsr1_core.meta.registry"]
    assert "lsr1_core.hmr" in g["explorer.views.training"]  # via lsr1_core.hmr.presets: the package runs first
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_import_cycle_at_the_top_of_files():
    cycle = _cycle(_graph(top_only=True))
    assert cycle is None, " → ".join(cycle)


def test_no_import_cycle_hidden_in_functions():
    cycle = _cycle(_graph(top_only=False))
    assert cycle is None, " → ".join(cycle)


# The layers (docs/design.md's package map), lowest first: the library below its figure builders (everything in
# lsr1_core but viz: its command-line modules are imported as library too, e.g. pretrained's catalogue, train's
# --set parser, hmr.train's problem), the figure builders (lsr1_core.viz), then what sits above the library: the
# app (explorer), the reports (experiments, not installed) and tools. A library module never imports a layer
# above its own.
VIZ = "lsr1_core.viz"
ABOVE_THE_LIBRARY = ("explorer", "experiments", "tools")
# the library's command lines: the commands users run to use the product
COMMANDS = ("lsr1_core.train", "lsr1_core.pretrained", "lsr1_core.runs.__main__", "lsr1_core.hmr.train")


def _under(module: str, prefixes) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _layer(module: str) -> int:
    if _under(module, ABOVE_THE_LIBRARY):
        return 2
    return 1 if _under(module, (VIZ,)) else 0


def test_the_library_imports_neither_the_app_nor_the_reports():
    for top_only in (True, False):
        g = _graph(top_only)
        bad = sorted(f"{m} → {d}" for m, deps in g.items() if m.startswith("lsr1_core") for d in deps
                     if _under(d, ABOVE_THE_LIBRARY))
        assert not bad, bad
        bad = sorted(f"{m} → {d}" for m, deps in g.items() if m.startswith("explorer") for d in deps
                     if _under(d, ("experiments",)))
        assert not bad, bad


def test_no_module_imports_a_layer_above_its_own():
    g = _graph(top_only=False)
    assert _layer("lsr1_core.hmr.compare") == 0 and _layer("lsr1_core.viz.hmr") == 1
    assert _layer("lsr1_core.train") == 0 and _layer("experiments.peers") == 2 and _layer("explorer.app") == 2
    bad = sorted(f"{m} → {d}" for m, deps in g.items() for d in deps
                 if m.startswith("lsr1_core") and _layer(d) > _layer(m))
    assert not bad, bad  # e.g. a library module importing lsr1_core.viz (the old hmr/prepare.py → viz/hmr.py)
    assert any(_layer(d) == 1 for d in g["explorer.hmr_prepare"])  # the page's set-up uses the figure builders


def _command_modules() -> set[str]:
    """Modules of lsr1_core that are command lines: they import argparse or run under ``__main__``."""
    found = set()
    for name, path in _modules().items():
        if not name.startswith("lsr1_core"):
            continue
        tree = ast.parse(path.read_text())
        imports_argparse = any(module == "argparse" for _, module, _ in _imports(tree, top_only=False))
        main_guard = any(isinstance(n, ast.If) and "__main__" in ast.unparse(n.test) for n in tree.body)
        if imports_argparse or main_guard or path.name == "__main__.py":
            found.add(name)
    return found


def test_the_library_holds_at_most_four_command_line_modules():
    found = _command_modules()
    assert "lsr1_core.train" in found and "lsr1_core.pretrained" in found  # the scan sees them
    commands = set(found)
    assert len(commands) <= 4 and all(_under(m, COMMANDS) for m in commands), sorted(found)
