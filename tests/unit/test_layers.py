"""The package's layers, read from its imports (all of them, including those inside functions).

model <- engine <- workflows <- cli: a module imports from its own layer or a layer to its left, and the
foundations (the package's top-level modules) from anywhere; no import cycle between modules; an import
inside a function is the exception (a heavy or optional import) and says why in a comment.
"""

from __future__ import annotations

import ast
import functools
import graphlib
import io
import tokenize
from dataclasses import dataclass
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "ingestion_factory"
LAYERS = ("model", "engine", "workflows", "cli")  # left to right: each may import the ones before it
DATA = ("resources",)  # files read as text (run inside images), imported by no module
MAX_LOCAL_IMPORTS = 14


@dataclass(frozen=True)
class Import:
    importer: str  # dotted module name
    target: str  # dotted module name (a module, or a package's __init__)
    line: int
    local: bool  # inside a function


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@functools.cache
def is_module(name: str) -> bool:
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


@functools.cache
def imports_of(path: Path) -> tuple[Import, ...]:
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(), str(path))
    functions = [node for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]
    local_nodes = {id(node) for function in functions for node in ast.walk(function)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names if alias.name.split(".")[0] == PACKAGE.name]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{base}.{node.module}" if node.module else base
            elif (node.module or "").split(".")[0] == PACKAGE.name:
                base = node.module
            else:
                continue
            # `from .pkg import module` imports the module; `from .module import name` the module itself
            targets = [f"{base}.{alias.name}" if is_module(f"{base}.{alias.name}") else base for alias in node.names]
        else:
            continue
        found += [Import(name, target, node.lineno, id(node) in local_nodes) for target in dict.fromkeys(targets)]
    return tuple(found)


def all_imports() -> list[Import]:
    return [item for path in sorted(PACKAGE.rglob("*.py")) for item in imports_of(path)]


def layer(module: str) -> int:
    """-1 for a foundation (a top-level module, or the package itself), else the index in LAYERS (data: past them all,
    so no module may import it)."""
    parts = module.split(".")
    if len(parts) == 1 or (len(parts) == 2 and (PACKAGE / f"{parts[1]}.py").is_file()):
        return -1
    return LAYERS.index(parts[1]) if parts[1] in LAYERS else len(LAYERS)


def against_layers(imports: list[Import]) -> list[str]:
    return [f"{i.importer} (line {i.line}) imports {i.target}" for i in imports
            if layer(i.target) > layer(i.importer)]


def cycle(imports: list[Import]) -> list[str]:
    graph: dict[str, set[str]] = {}
    for item in imports:
        if item.target != item.importer:
            graph.setdefault(item.importer, set()).add(item.target)
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as error:
        return list(error.args[1])
    return []


def comment_lines(path: Path) -> set[int]:
    tokens = tokenize.generate_tokens(io.StringIO(path.read_text()).readline)
    return {token.start[0] for token in tokens if token.type == tokenize.COMMENT}


def local_imports() -> list[tuple[Import, bool]]:
    """Each in-function internal import statement, and whether a comment on its line or the one before says why."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        comments = comment_lines(path)
        lines = {}
        for item in imports_of(path):
            if item.local:
                lines.setdefault(item.line, item)
        found += [(item, bool({line, line - 1} & comments)) for line, item in lines.items()]
    return found


def test_the_layers_are_the_packages_subpackages():
    subpackages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert subpackages == set(LAYERS) | set(DATA)


def test_no_import_goes_against_the_layers():
    wrong = against_layers(all_imports())
    assert not wrong, f"imports against the layers ({' <- '.join(LAYERS)}):\n" + "\n".join(wrong)


def test_no_import_cycle():
    loop = cycle(all_imports())
    assert not loop, "import cycle: " + " -> ".join(loop)


def test_imports_inside_functions_are_few_and_say_why():
    found = local_imports()
    shown = [f"{i.importer}:{i.line} imports {i.target}" for i, _ in found]
    assert len(found) <= MAX_LOCAL_IMPORTS, f"{len(found)} imports inside functions:\n" + "\n".join(shown)
    silent = [f"{i.importer}:{i.line} imports {i.target}" for i, commented in found if not commented]
    assert not silent, "imports inside functions without a comment saying why:\n" + "\n".join(silent)


def test_the_checks_see_a_back_import_and_a_cycle():
    """The rule itself: a model module importing the cli is reported, and so is a two-module loop."""
    back = Import("ingestion_factory.model.plan", "ingestion_factory.cli.commands", 1, False)
    forth = Import("ingestion_factory.cli.commands", "ingestion_factory.model.plan", 1, False)
    assert against_layers([back, forth]) == [f"{back.importer} (line 1) imports {back.target}"]
    assert set(cycle([back, forth])) == {back.importer, forth.importer}


# --- one home per concern: printing in cli/ ----------------------------------------------------------

PRINTING_HOME = "cli"  # the one layer that shows things (rich); the others report through progress.Progress


def printing_outside_home(paths) -> list[str]:
    """`rich` imported (at module level or in a function) by a module outside cli/."""
    found = []
    for path in paths:
        if path.relative_to(PACKAGE).parts[0] == PRINTING_HOME:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            found += [f"{path.relative_to(PACKAGE)}:{node.lineno} imports {name}"
                      for name in names if name.split(".")[0] == "rich"]
    return found


def test_only_the_cli_imports_rich():
    wrong = printing_outside_home(sorted(PACKAGE.rglob("*.py")))
    assert not wrong, "the library never prints; progress goes through progress.Progress:\n" + "\n".join(wrong)


def test_the_printing_rule_sees_a_rich_import(tmp_path, monkeypatch):
    module = PACKAGE / "workflows" / "push.py"
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: "def f():\n    from rich.table import Table\n")
    assert printing_outside_home([module]) == ["workflows/push.py:2 imports rich.table"]


# --- one seam to the engine: the docker SDK in engine/ ---------------------------------------------

ENGINE_HOME = "engine"  # the one layer that calls the docker SDK; the others go through docker_engine.Engine


def sdk_calls_outside_home(paths) -> list[str]:
    """`x.api.y` (the SDK's low-level client, `api.api.tag(...)`), a private attribute of it (`api.api._get`),
    or `docker.errors` imported, in a module outside engine/."""
    found = []
    for path in paths:
        if path.relative_to(PACKAGE).parts[0] == ENGINE_HOME:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) and node.value.attr == "api" \
                    and node.attr != "api":  # `self.api.api.tag`: reported once, as .api.tag
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno} calls .api.{node.attr}")
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            found += [f"{path.relative_to(PACKAGE)}:{node.lineno} imports {name}"
                      for name in names if name == "docker.errors"]
    return sorted(found, key=lambda text: (text.partition(":")[0], int(text.split(":")[1].split()[0])))


def test_only_the_engine_layer_calls_the_docker_sdks_low_level_client():
    wrong = sdk_calls_outside_home(sorted(PACKAGE.rglob("*.py")))
    assert not wrong, "the engine is reached through engine/docker_engine.Engine:\n" + "\n".join(wrong)


def test_the_engine_rule_sees_an_sdk_call(monkeypatch):
    module = PACKAGE / "workflows" / "push.py"
    source = "def f(api):\n    api.api.tag('i', 'r', 't')\n    from docker.errors import NotFound\n"
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: source)
    assert sdk_calls_outside_home([module]) == ["workflows/push.py:2 calls .api.tag",
                                                "workflows/push.py:3 imports docker.errors"]
    assert sdk_calls_outside_home([PACKAGE / "engine" / "docker_engine.py"]) == []
