"""The package's import graph: no module imports itself through others (an import cycle
makes the order in which modules load decide what a name means), and the core does not
import the training app, whose dependencies (tqdm, matplotlib) the core does without.

Every ``import`` statement counts, those inside functions too: a deferred import that
closes a cycle still ties the modules together."""
import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = {"tallskinny_np": ROOT / "tallskinny_np", "verify": ROOT / "verify"}


def modules():
    """``{module name: path}`` for every module of the packages (a package by its
    ``__init__``)."""
    found = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join([package, *parts])] = path
    return found


def imported(name, text, known, is_package=False):
    """The modules of ``known`` that the module ``name`` (source ``text``) imports.
    ``from P import n`` imports the submodule ``P.n`` where there is one, else takes n from
    P; P itself counts unless it is a package that holds ``name`` (loaded before it)."""
    package = name if is_package else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            module = ".".join(p for p in (base if node.level else "", node.module or "") if p)
            subs = {f"{module}.{alias.name}" for alias in node.names}
            out |= subs & known
            if not subs <= known or not name.startswith(module + "."):
                out.add(module)
    return {m for m in out if m in known and m != name}


def graph():
    known = modules()
    return {name: imported(name, path.read_text(), set(known), path.name == "__init__.py")
            for name, path in known.items()}


def cycle(edges):
    """One import cycle as a list of modules (first repeated at the end), or None."""
    state = {}

    def visit(node, stack):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt, stack)
                if found:
                    return found
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(edges):
        if node not in state:
            found = visit(node, [])
            if found:
                return found
    return None


def test_the_package_has_no_import_cycle():
    edges = graph()
    assert len(edges) > 40                        # the walk found the modules
    found = cycle(edges)
    assert found is None, "import cycle: " + " -> ".join(found)


def test_the_core_does_not_import_the_training_app():
    edges = graph()
    core = [m for m in edges if m.startswith("tallskinny_np")
            and not m.startswith("tallskinny_np.training")]
    bad = {m: sorted(t for t in edges[m] if t.startswith("tallskinny_np.training"))
           for m in core}
    assert not any(bad.values()), bad


def test_the_cycle_check_finds_a_cycle():
    """The check can fail: a cycle through three modules, and a deferred import inside a
    function (the kind that once tied the datasets and the image folders together) is an
    edge of the graph."""
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set()}) is None
    known = {"p", "p.datasets", "p.folders"}
    deferred = "def load():\n    from .folders import image_folder_data\n"
    assert imported("p.datasets", deferred, known) == {"p.folders"}
    assert imported("p.folders", "from . import datasets\n", known) == {"p.datasets"}
