"""The architecture's rules, read from the code itself (ast, a child interpreter): function
length, import cycles, which layer may import which, the no-torch modules, and registries
that agree with the parameter table and the README. Fast: no training, no agents.
"""

from __future__ import annotations

import ast
import functools
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import ROOT

PACKAGES = ("agent", "nn", "util", "benchmarks")
MAX_FUNCTION_LINES = 80
# The layers, top to bottom, and what each may import besides itself. A module belongs to
# the layer of its longest matching prefix in LAYER_OF. Function-level imports are held to
# the same table: a lazy import hides a dependency from import time, not from the reader.
ALLOWED_IMPORTS = {
    "commands": {"cluster", "report", "sweep", "trial", "basics", "nn", "util"},
    "benchmarks": {"commands", "cluster", "report", "sweep", "trial", "basics", "nn", "util"},
    "cluster": {"sweep", "basics", "util"},
    "report": {"sweep", "trial", "basics", "nn", "util"},
    "sweep": {"trial", "basics", "util"},
    "trial": {"basics", "nn", "util"},
    "basics": {"util"},  # and, at call time only, the registries (see REGISTRIES)
    "nn": {"util"},
    "util": set(),
}
LAYER_OF = {
    "agent.train": "commands", "agent.launch": "commands", "agent.status": "commands",
    "agent.repeat": "commands", "agent.report.__main__": "commands",
    "agent.cluster": "cluster", "agent.report": "report", "agent.sweep": "sweep",
    "agent.trial": "trial",
    "agent": "basics",  # the package itself and its no-torch modules: params, ids, metrics...
    "nn": "nn", "util": "util", "benchmarks": "benchmarks",
}
# Registries: dicts name -> constructor. The parameter table (basics) reads them when asked
# for allowed values, by a function-level `from X import REGISTRY`.
REGISTRIES = ("MODELS", "OPTIMIZERS", "DATASETS", "SINKS", "SCHEDULES")
# Their keys where importing the registry would load torch (nn/__init__.py): checking a model
# or optimizer name must not (agent.repeat and agent.status read every run's config).
REGISTRY_NAMES = ("MODEL_NAMES", "OPTIMIZER_NAMES")
NO_TORCH_MODULES = ("agent.sweep.controller", "agent.sweep.store", "agent.sweep.target",
                    "agent.params", "agent.metrics", "agent.ids", "util.datasets",
                    "nn", "nn.schedules")


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str          # a project module
    names: tuple[str, ...]  # for `from X import a, b`: a, b
    line: int
    module_level: bool     # runs when the importer is imported (not inside a function)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@functools.cache
def project_modules() -> dict[str, Path]:
    return {module_name(path): path for package in PACKAGES
            for path in sorted((ROOT / package).rglob("*.py"))}


@functools.cache
def syntax_tree(module: str) -> ast.Module:
    path = project_modules()[module]
    return ast.parse(path.read_text(), filename=str(path))


def resolve(module: str, node: ast.ImportFrom) -> str:
    """The absolute module name a (possibly relative) `from ... import` starts from."""
    if not node.level:
        return node.module
    package = module.split(".")
    if project_modules()[module].name != "__init__.py":
        package = package[:-1]
    base = package[:len(package) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def project_target(name: str) -> str | None:
    """`name`, or its nearest enclosing package, when it is a project module."""
    modules = project_modules()
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def imports_in(module: str) -> list[Import]:
    """Every import of a project module in `module`, module-level or inside a function."""
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = project_target(alias.name)
                if target:
                    found.append(Import(module, target, (), node.lineno, not in_function))
        elif isinstance(node, ast.ImportFrom):
            base = resolve(module, node)
            for alias in node.names:  # `from agent import metrics` imports agent.metrics
                target = project_target(f"{base}.{alias.name}") or project_target(base)
                if target:
                    found.append(Import(module, target, (alias.name,), node.lineno,
                                        not in_function))
        inside = in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                  ast.Lambda))
        for child in ast.iter_child_nodes(node):
            visit(child, inside)

    visit(syntax_tree(module), False)
    return found


@functools.cache
def all_imports() -> tuple[Import, ...]:
    return tuple(edge for module in project_modules() for edge in imports_in(module))


def layer(module: str) -> str | None:
    prefixes = [p for p in LAYER_OF if module == p or module.startswith(p + ".")]
    return LAYER_OF[max(prefixes, key=len)] if prefixes else None


def where(edge: Import) -> str:
    return f"{project_modules()[edge.importer].relative_to(ROOT)}:{edge.line}"


# --- functions --------------------------------------------------------------------------
def long_definitions(tree: ast.AST, label: str) -> dict[str, int]:
    """'label:qualified name' -> lines (def line to the body's last line) of every function,
    method and nested function in `tree` over MAX_FUNCTION_LINES."""
    found = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            name = prefix
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}"
                lines = child.end_lineno - child.lineno + 1
                if not isinstance(child, ast.ClassDef) and lines > MAX_FUNCTION_LINES:
                    found[f"{label}:{name}"] = lines
                name += "."
            visit(child, name)

    visit(tree, "")
    return found


def long_functions() -> dict[str, int]:
    return {name: lines for module, path in project_modules().items()
            for name, lines in long_definitions(syntax_tree(module),
                                                str(path.relative_to(ROOT))).items()}


def test_no_function_over_80_lines():
    assert not long_functions(), f"over {MAX_FUNCTION_LINES} lines: {long_functions()}"


def test_every_module_starts_with_its_job():
    """STYLE.md: a module starts with two or three lines on its job (packages included)."""
    missing = [module for module in project_modules()
               if not ast.get_docstring(syntax_tree(module))]
    assert not missing, f"no module docstring: {missing}"


def test_function_length_check_sees_methods_and_nested_functions():
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES - 1))
    source = (f"class C:\n  def method(self):\n{body}\n"  # exactly the limit: fine
              f"  def longer(self):\n{body}\n    pass\n"
              f"def outer():\n  async def inner():\n{body}\n    pass\n")
    assert long_definitions(ast.parse(source), "x.py") == {
        "x.py:C.longer": MAX_FUNCTION_LINES + 1, "x.py:outer": MAX_FUNCTION_LINES + 2,
        "x.py:outer.inner": MAX_FUNCTION_LINES + 1}


# --- imports ------------------------------------------------------------------------------
def import_cycle(edges: list[tuple[str, str]]) -> list[str] | None:
    """One cycle of the directed graph `edges` (as a path back to its start), or None."""
    graph: dict[str, set[str]] = {}
    for source, target in edges:
        graph.setdefault(source, set()).add(target)
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := walk(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := walk(start)):
            return cycle
    return None


def test_cycle_finder_finds_a_cycle_and_only_a_cycle():
    assert import_cycle([("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")]) == ["a", "b", "c",
                                                                                "a"]
    assert import_cycle([("a", "b"), ("a", "c"), ("b", "c")]) is None


def test_no_import_cycle_between_project_modules():
    edges = [(e.importer, e.imported) for e in all_imports()
             if e.module_level and e.importer != e.imported]
    assert len(edges) > 20  # the graph was built
    assert import_cycle(edges) is None, " -> ".join(import_cycle(edges))


def test_every_module_has_a_layer():
    assert not [m for m in project_modules() if layer(m) is None]
    assert set(LAYER_OF.values()) == set(ALLOWED_IMPORTS)


def test_imports_point_down_the_layers():
    wrong = []
    for edge in all_imports():
        source, target = layer(edge.importer), layer(edge.imported)
        if source == target or target in ALLOWED_IMPORTS[source]:
            continue
        if (source == "basics" and not edge.module_level and edge.names
                and set(edge.names) <= set(REGISTRIES) | set(REGISTRY_NAMES)):
            continue  # the parameter table reading a registry when asked
        wrong.append(f"{where(edge)} {edge.importer} ({source}) imports {edge.imported} "
                     f"({target})")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("lower, upper", [("util", ("agent", "nn")), ("nn", ("agent",))])
def test_lower_packages_never_import_upper_ones(lower, upper):
    wrong = [f"{where(e)} imports {e.imported}" for e in all_imports()
             if e.importer.split(".")[0] == lower and e.imported.split(".")[0] in upper]
    assert not wrong, wrong


@pytest.mark.timeout(120)
def test_modules_without_torch_import_without_torch():
    code = ("import importlib, json, sys\n"
            "module = importlib.import_module(sys.argv[1])\n"
            "print(json.dumps(sorted(m for m in ('torch', 'torchvision') if m in sys.modules)))")
    children = {module: subprocess.Popen([sys.executable, "-c", code, module], cwd=ROOT,
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                         text=True) for module in NO_TORCH_MODULES}
    loaded = {}
    for module, child in children.items():
        out, err = child.communicate(timeout=100)
        assert child.returncode == 0, err[-2000:]
        loaded[module] = out.strip()
    assert loaded == {module: "[]" for module in NO_TORCH_MODULES}


# --- registries ---------------------------------------------------------------------------
def registry_modules() -> dict[str, str]:
    """Registry name -> the module that defines it at its top level (found by ast)."""
    found: dict[str, list[str]] = {}
    for module in project_modules():
        for node in syntax_tree(module).body:
            targets = (node.targets if isinstance(node, ast.Assign) else
                       [node.target] if isinstance(node, ast.AnnAssign) else [])
            for target in targets:
                if isinstance(target, ast.Name) and target.id in REGISTRIES:
                    found.setdefault(target.id, []).append(module)
    assert all(len(modules) == 1 for modules in found.values()), found
    return {name: modules[0] for name, modules in found.items()}


def readme_allowed_column() -> dict[str, str]:
    """Parameter name -> the 'allowed' cell of README.md's parameter table."""
    rows = re.findall(r"^\| `(\w+)` \| [^|]* \| [^|]* \| ([^|]*) \|", (ROOT / "README.md")
                      .read_text(), re.M)
    return dict(rows)


@pytest.mark.parametrize("registry", REGISTRIES)
def test_registry_entries_are_allowed_by_the_parameter_table_and_named_in_the_readme(
        registry):
    import importlib

    from agent.params import PARAMS, validate

    module = registry_modules()[registry]
    entries = list(getattr(importlib.import_module(module), registry))
    assert entries, f"{module}.{registry} is empty"
    readme = readme_allowed_column()
    for entry in entries:
        params = [p for p in PARAMS if entry in (p.allowed_choices() or ())]
        assert params, f"{module}.{registry}[{entry!r}]: no parameter in agent/params.py " \
            "allows it"
        for param in params:
            validate({param.name: [entry] if param.type is list else entry})
            assert re.search(rf"\b{re.escape(entry)}\b", readme.get(param.name, "")), \
                f"README.md's parameter table does not name {entry!r} for {param.name}"


# A path the documents name, in backticks or bare: a file or folder of the repository
# (`tests/test_x.py`, `agent/sweep/`), a glob (`tests/test_packed*.py`), or a module and one
# of its names (`util/errors.stop_at_next_step`). Placeholders a reader fills in are not paths.
DOC_PATH = re.compile(r"(?<![\w/.<$-])((?:\.ci|agent|nn|util|tests|benchmarks|docker|sweeps|docs)"
                      r"/[\w./*-]*[\w*/])")
DOC_PLACEHOLDERS = {"sweeps/x.yaml"}


def documents() -> list[Path]:
    return [ROOT / "README.md", ROOT / "BENCHMARKS.md", *sorted((ROOT / "docs").rglob("*.md"))]


def missing_doc_paths(text: str, root: Path) -> list[str]:
    """The repository paths `text` names that `root` lacks: a glob none matches, or a
    `module.name` whose module file does not define `name`."""
    missing = []
    for path in sorted(set(DOC_PATH.findall(text)) - DOC_PLACEHOLDERS):
        module, _, name = path.rpartition(".")
        if "*" in path:
            found = any(root.glob(path))
        elif (root / path).exists():
            found = True
        elif module and (root / f"{module}.py").is_file():
            source = (root / f"{module}.py").read_text()
            found = re.search(rf"^(?:class|def) {re.escape(name)}\b", source, re.M) is not None
        else:
            found = False
        if not found:
            missing.append(path)
    return missing


@pytest.mark.parametrize("document", documents(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_path_the_documents_name_exists(document):
    assert missing_doc_paths(document.read_text(), ROOT) == []


def test_path_check_finds_a_renamed_file_and_a_missing_name():
    text = ("`tests/test_architecture.py`, tests/test_gone_away.py, `tests/test_arch*.py`, "
            "`util/errors.stop_at_next_step`, `util/errors.no_such_function`, `sweeps/x.yaml`")
    assert missing_doc_paths(text, ROOT) == ["tests/test_gone_away.py",
                                             "util/errors.no_such_function"]
