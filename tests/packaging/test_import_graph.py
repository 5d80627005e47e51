"""The import graph of the product code: no cycle between modules, and the protocol layer is
the floor (libcni.protocol imports nothing of libcni above it, and nothing of the plugins).

Imports are read with ast, lazy ones inside functions included: a cycle through a lazy import
is still two modules that cannot be understood one without the other."""

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repo
PACKAGES = ("libcni", "plugins", "ipam", "meta")
FLOOR = "libcni.protocol"
# What the floor may import besides itself: the package root (it holds PYCNI_VERSION only).
FLOOR_MAY_IMPORT = {"libcni"}


def _modules() -> dict:
    """{dotted module name: file path} of every module under PACKAGES."""
    found = {}
    for package in PACKAGES:
        for folder, dirs, files in os.walk(os.path.join(ROOT, package)):
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            for name in files:
                if not name.endswith(".py"):
                    continue
                path = os.path.join(folder, name)
                dotted = os.path.relpath(path, ROOT)[: -len(".py")].replace(os.sep, ".")
                found[dotted.removesuffix(".__init__")] = path
    return found


def _imports(module: str, path: str, known: dict) -> set:
    """The modules of `known` that `module` imports (the submodule when `from package import
    name` names one, else the package)."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    is_package = path.endswith("__init__.py")
    targets = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = module.split(".")
                keep = len(parts) - node.level + (1 if is_package else 0)
                base = ".".join(parts[:keep] + ([base] if base else []))
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                targets.add(submodule if submodule in known else base)
    edges = set()
    for target in targets:
        while target and target not in known:  # `import a.b.c` of a non-module attribute
            target = target.rpartition(".")[0]
        # A module importing its own package (or a package its own module) is not an arrow.
        if target and target != module and not module.startswith(target + "."):
            edges.add(target)
    return edges


def _graph() -> dict:
    known = _modules()
    return {module: _imports(module, path, known) for module, path in known.items()}


def _cycles(graph: dict) -> list:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict = {}
    low: dict = {}
    stack: list = []
    on_stack: set = set()
    found = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


@pytest.fixture(scope="module")
def graph():
    return _graph()


def test_the_walk_sees_the_code_base(graph):
    assert "libcni.protocol.skel" in graph and "plugins.bridge.bridge" in graph
    assert "libcni.kernel.session" in graph["libcni.kernel.links"]


def test_no_import_cycle(graph):
    assert _cycles(graph) == []


def test_protocol_is_the_floor(graph):
    upward = sorted(
        f"{module} imports {target}"
        for module, targets in graph.items()
        if module == FLOOR or module.startswith(FLOOR + ".")
        for target in targets
        if not (target == FLOOR or target.startswith(FLOOR + "."))
        and target not in FLOOR_MAY_IMPORT
    )
    assert upward == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
