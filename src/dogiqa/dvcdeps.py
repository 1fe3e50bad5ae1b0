"""The code each DVC stage runs, and dvc.yaml's deps generated from it.

A stage's command is ``python -m dogiqa <command> ...``. Its code is the import closure, within
this package, of ``dogiqa.__main__`` and of the command's module (``dogiqa.cli.COMMANDS``), and
for a report stage (``--notebook NAME``) of the notebook's own imports, plus the notebook. The
closure follows every ``import`` (at module level or inside a function, so lazily imported
backends count) and every string that names a module of the package (the backend registries name
their modules), and it takes each packaged resource file (prompts, paper tables, manifests) whose
name a module of the closure mentions. A folder of the package whose files are all needed is
listed as the folder.

``python -m dogiqa dvc-deps --check`` fails, naming the stage and the file, when a stage's code
deps differ from that closure; ``--write`` rewrites them (the entries under ``src/dogiqa`` and
``notebooks``), keeping each stage's data deps, in their order, after them.
"""

from __future__ import annotations

import ast
import json
import re
import shlex
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

from dogiqa import paths
from dogiqa.errors import DogIQAError

PACKAGE = "dogiqa"
PACKAGE_DIR = Path(__file__).resolve().parent
SOURCE = Path("src") / PACKAGE
"""The package below the project root, as dvc.yaml names it."""
CODE_PREFIXES = (f"{SOURCE.as_posix()}/", f"{paths.NOTEBOOKS.as_posix()}/")
"""Deps under these are code (generated); every other dep is data (written by hand)."""
ENTRY = f"{PACKAGE}.__main__"
DISPATCHER = f"{PACKAGE}.cli"
"""Its table names every command's module; a stage runs only its own, so only the dispatcher's
imports count, not the names in its table."""
_MODULE_NAME = re.compile(rf"{PACKAGE}(\.\w+)*")


# --- the import closure ---------------------------------------------------------------------


def module_file(name: str) -> Path | None:
    """The source file of module ``name`` of the package, or None when there is none."""
    parts = name.split(".")
    if parts[0] != PACKAGE:
        return None
    base = PACKAGE_DIR.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _strings(tree: ast.AST) -> list[str]:
    return [
        n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
    ]


def imports_of(tree: ast.AST, names: bool = True) -> set[str]:
    """The package's modules that ``tree`` imports (absolute imports, as the package writes
    them) or, with ``names``, names in a string."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)  # ``from a.b import c``: c is a module of a.b or a name in it
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    if names:
        found.update(s for s in _strings(tree) if _MODULE_NAME.fullmatch(s))
    return {name for name in found if module_file(name) is not None}


@cache
def _parsed(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def closure(
    modules: Iterable[str],
    within: str | None = None,
    *,
    names: bool = True,
    skip: Iterable[str] = (),
) -> set[str]:
    """``modules`` and every module of the package they import, transitively, with the packages
    that contain them (importing ``a.b`` runs ``a/__init__.py``). With ``within`` (a package),
    only the modules inside it, without its ``__init__`` and those of the packages above.
    ``names=False`` follows imports only, not strings that name a module (a registry's entries);
    the modules in ``skip`` are left out, and so is what only they import."""
    skipped = set(skip)

    def kept(name: str) -> bool:
        return (within is None or name.startswith(f"{within}.")) and name not in skipped

    todo = [m for m in modules if module_file(m) is not None and kept(m)]
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        parts = name.split(".")
        if within is None:
            todo += [".".join(parts[:i]) for i in range(1, len(parts))]
        found = imports_of(_parsed(module_file(name)), names=names and name != DISPATCHER)
        todo += sorted(m for m in found - seen if kept(m))
    return seen


PARAMS_RESOURCES = ("resources/profiles.yaml",)
"""Packaged files that are params files: a stage tracks the entries of them it reads (its
``params`` in dvc.yaml, e.g. a run's own profile), not the whole file as code."""


def resource_files() -> list[Path]:
    """The package's data files (everything but Python sources, caches and params files)."""
    params_files = {PACKAGE_DIR / name for name in PARAMS_RESOURCES}
    return sorted(
        p
        for p in PACKAGE_DIR.rglob("*")
        if p.is_file()
        and p.suffix not in (".py", ".pyc")
        and "__pycache__" not in p.parts
        and p not in params_files
    )


def resources_of(modules: Iterable[str]) -> set[Path]:
    """The resource files that ``modules`` read: one of them mentions the file's folder (e.g.
    ``"manifests"``, ``"resources/prompts.yaml"``, ``"dogiqa.resources"``) and one the file's name
    (a registry may name a manifest that the download stage reads)."""
    strings = {s for m in modules for s in _strings(_parsed(module_file(m)))}
    words = {word for s in strings for word in re.split(r"[./]", s)}
    return {
        r for r in resource_files() if r.parent.name in words and any(r.name in s for s in strings)
    }


def notebook_imports(notebook: Path) -> set[str]:
    """The package's modules that a notebook's code cells import."""
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    found: set[str] = set()
    for cell in cells:
        if cell["cell_type"] != "code":
            continue
        lines = "".join(cell["source"]).splitlines()
        code = "\n".join(line for line in lines if not line.lstrip().startswith(("%", "!")))
        found |= imports_of(ast.parse(code))
    return found


# --- stages ------------------------------------------------------------------------------------


def stage_entry(cmd: str) -> tuple[str, str | None] | None:
    """(command module, notebook name or None) of ``python -m dogiqa <command> ...``; None for
    a command that is not one of the package's."""
    from dogiqa.cli import COMMANDS

    words = shlex.split(cmd)
    if words[:3] != ["python", "-m", PACKAGE]:
        return None
    command = next((w for w in words[3:] if w in COMMANDS), None)
    if command is None:
        raise DogIQAError(f"dvc.yaml: no dogiqa command in {cmd!r}")
    notebook = words[words.index("--notebook") + 1] if "--notebook" in words else None
    return COMMANDS[command].module, notebook


def _relative(path: Path, root: Path) -> str:
    if path.is_relative_to(PACKAGE_DIR):
        return (SOURCE / path.relative_to(PACKAGE_DIR)).as_posix()
    return path.relative_to(root).as_posix()


def _compress(files: set[str]) -> list[str]:
    """Sorted, with a subfolder of the package listed once when all its files are needed."""
    out = set(files)
    folders = sorted({p.parent for p in PACKAGE_DIR.rglob("*") if p.is_file()} - {PACKAGE_DIR})
    for folder in folders:
        members = {
            (SOURCE / p.relative_to(PACKAGE_DIR)).as_posix()
            for p in folder.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
        }
        if members and members <= out:
            out = (out - members) | {(SOURCE / folder.relative_to(PACKAGE_DIR)).as_posix()}
    return sorted(out)


def code_deps(cmd: str, root: Path) -> list[str] | None:
    """The code deps of a stage running ``cmd`` (None: not a command of this package)."""
    entry = stage_entry(cmd)
    if entry is None:
        return None
    module, notebook = entry
    roots = {ENTRY, module}
    extra: set[str] = set()
    if notebook is not None:
        source = paths.notebook(notebook, base=root)
        if not source.is_file():
            raise DogIQAError(f"dvc.yaml: {cmd!r}: notebook {paths.show(source)} not found")
        roots |= notebook_imports(source)
        extra.add(_relative(source, root))
    modules = closure(roots)
    files = {_relative(module_file(m), root) for m in modules}
    files |= {_relative(r, root) for r in resources_of(modules)}
    return sorted(extra) + _compress(files)


def _stage_bodies(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Stage name -> the mapping that holds its cmd and deps (``do`` of a foreach stage)."""
    stages = document.get("stages") or {}
    return {name: body.get("do", body) for name, body in stages.items()}


def is_code(dep: str) -> bool:
    return dep.startswith(CODE_PREFIXES)


def problems(root: Path | None = None) -> list[str]:
    """One line per stage whose code deps differ from its code (empty: dvc.yaml is current)."""
    import yaml

    root = root if root is not None else paths.root()
    document = yaml.safe_load((root / "dvc.yaml").read_text(encoding="utf-8"))
    found = []
    for name, body in _stage_bodies(document).items():
        wanted = code_deps(body["cmd"], root)
        if wanted is None:
            continue
        listed = [d for d in body.get("deps") or [] if isinstance(d, str) and is_code(d)]
        missing = [d for d in wanted if d not in listed]
        unused = [d for d in listed if d not in wanted]
        if missing:
            found.append(f"{name}: deps lack {', '.join(missing)}")
        if unused:
            found.append(f"{name}: deps list code it does not run: {', '.join(unused)}")
        if not missing and not unused and listed != wanted:
            found.append(f"{name}: code deps out of order")
    return found


def rewrite(root: Path | None = None) -> int:
    """Rewrite the code deps of every stage in dvc.yaml; return how many stages changed."""
    from ruamel.yaml import YAML
    from ruamel.yaml.comments import CommentedSeq

    root = root if root is not None else paths.root()
    target = root / "dvc.yaml"
    yaml_rt = YAML()
    yaml_rt.indent(mapping=2, sequence=4, offset=2)
    yaml_rt.width = 4096
    yaml_rt.preserve_quotes = True
    document = yaml_rt.load(target.read_text(encoding="utf-8"))
    changed = 0
    for body in _stage_bodies(document).values():
        wanted = code_deps(body["cmd"], root)
        if wanted is None:
            continue
        old = list(body.get("deps") or [])
        new = wanted + [d for d in old if not (isinstance(d, str) and is_code(d))]
        if new != old:
            body["deps"] = CommentedSeq(new)
            changed += 1
    with target.open("w", encoding="utf-8") as handle:
        yaml_rt.dump(document, handle)
    return changed


def main(check: bool = False, write: bool = False) -> int:
    """The ``dvc-deps`` command: report (``check``: fail on) or ``write`` dvc.yaml's code deps."""
    if write:
        count = rewrite()
        print(f"dvc.yaml: code deps of {count} stage(s) rewritten")
        return 0
    found = problems()
    for line in found:
        print(line)
    if not found:
        print("dvc.yaml: every stage's code deps match its imports")
    return 1 if found and check else 0
