"""Rules of the repository that no single module's tests see.

Nothing machine-specific in the repository (issue 11, item 6). Every tracked text file is searched
for absolute paths of one machine (a project or home folder, a temporary run folder, an
interpreter's site-packages) and for package-index URLs: committed scripts find what they need
relative to the repository root, results show commands relative to it, and the peer environments
come from ``experiments/peers/setup.sh`` with plain ``pip install``. The patterns are assembled from
pieces, so that this file itself (which is scanned like any other) does not match them; the
negative controls run the same checker on small strings that do.

No private name used across packages (issue 12, item 5). Every module of ``eqgeo/`` is parsed, and
its imports, and attributes of the names they bind, must not reach a private name (one leading
underscore) of another package: what one package needs of another is public there.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

_SL = "/"
# An absolute path starts the token: not after a word character, a dot (``../x``), ``~``, a slash,
# a hyphen, or the end of a placeholder or expansion (``{root}/x``, ``$(pwd)/x``, ``<run dir>/x``).
_START = r"(?<![\w.~/\-})>])"
_NAME = r"[\w.+\-]+"


def _abs(*parts: str) -> str:
    """Regex of the absolute path ``/part/part/...`` at a token start (the parts are regexes)."""
    return _START + _SL + _SL.join(parts)


PATTERNS: list[tuple[str, re.Pattern]] = [
    ("project folder of one machine", re.compile(_abs("work", ""))),
    ("root's home folder", re.compile(_abs("root", ""))),
    ("a user's home folder", re.compile(_abs("home", _NAME))),
    ("a user's home folder (macOS)", re.compile(_abs("Users", _NAME))),
    ("a mounted or scratch folder", re.compile(_abs("(?:mnt|scratch)", _NAME))),
    ("a temporary folder's contents", re.compile(_abs("(?:var" + _SL + ")?tmp", _NAME))),
    ("a temporary folder's contents (macOS)", re.compile(_abs("(?:private" + _SL + ")?var", "folders", ""))),
    ("an interpreter's installed packages", re.compile(_START + _SL + r"(?:[\w.+\-]+" + _SL + r")+(?:site|dist)-packages\b")),
    ("a pyenv / conda interpreter folder", re.compile(r"\.pyenv" + _SL + "versions" + _SL + "|" + _abs("opt", "conda", ""))),
    ("a Windows path", re.compile(r"(?<![\w])[A-Za-z]:\\{1,2}(?:Users|Documents and Settings|Program Files|ProgramData|Windows)\b")),
    ("a package-index option", re.compile("--" + r"(?:extra-)?" + "index" + "-url" + "|" + "--" + "find" + "-links")),
    ("a package-index variable", re.compile(r"\bPIP_(?:EXTRA_)?" + "INDEX" + "_URL" + r"\b")),
    ("a package-index host", re.compile("download" + r"\." + "pytorch" + r"\." + "org")),
]


def machine_specific(text: str) -> list[tuple[int, str, str]]:
    """``(line number, what, the matched text)`` for each machine-specific thing in ``text``."""
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        for what, pattern in PATTERNS:
            for match in pattern.finditer(line):
                found.append((number, what, match.group(0)))
    return found


def _tracked_files() -> list[str]:
    """Paths of the files git tracks, relative to the repository root; fails under CI without git."""
    problem = None
    if shutil.which("git") is None:
        problem = "git is not installed"
    else:
        run = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True)
        if run.returncode != 0:
            problem = f"`git ls-files` failed in {REPO.name}: {run.stderr.decode(errors='replace').strip()}"
        elif not run.stdout:
            problem = "`git ls-files` lists no file"
    if problem is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"cannot list the tracked files: {problem}")
        pytest.skip(f"not a git checkout ({problem})")
    return [p for p in run.stdout.decode().split("\0") if p]


def _text_of(path: Path) -> str | None:
    """The file's text, or ``None`` for a binary or missing file."""
    try:
        data = path.read_bytes()
    except (FileNotFoundError, IsADirectoryError):  # deleted in the work tree, or a submodule
        return None
    if b"\0" in data[:8192]:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def test_no_machine_specific_paths_in_tracked_files():
    files = _tracked_files()
    scanned, report = 0, []
    for rel in files:
        text = _text_of(REPO / rel)
        if text is None:
            continue
        scanned += 1
        report += [f"{rel}:{number}: {what}: {found!r}" for number, what, found in machine_specific(text)]
    assert scanned > 0
    assert not machine_specific(Path(__file__).read_text()), "this file must not match its own patterns"
    assert not report, ("machine-specific text in tracked files (use paths relative to the repository root, "
                        "experiments/peers/setup.sh for peer environments, plain `pip install NAME`):\n"
                        + "\n".join(report))


@pytest.mark.parametrize("text", [
    "cd " + _SL + "work" + _SL + "main",
    "python nve_drift.py " + _SL + "tmp" + _SL + "eqcalc/rmd17_run/checkpoints/best.ckpt --steps 4000",
    "- MACE environment `" + _SL + "work" + _SL + "venvs/mace`",
    "source: `" + _SL + "root" + _SL + ".pyenv" + _SL + "versions/3.11.7/lib/python3.11/" + "site" + "-packages/qm9pack/data`",
    "default=\"" + _SL + "home" + _SL + "alice/venvs/mace/bin/python\"",
    "open('" + _SL + "Users" + _SL + "bob/data.csv')",
    "x = " + _SL + "usr/lib/python3/" + "dist" + "-packages/numpy",
    "pip install torch " + "--" + "index" + "-url https://example.org/whl/cpu",
    "pip install x " + "--" + "extra-index" + "-url https://example.org/simple",
    "see https://" + "download" + ".pytorch" + ".org/whl/cpu",
    "C:" + "\\" + "Users" + "\\" + "carol" + "\\" + "eqgeo",
    "PIP_" + "INDEX" + "_URL=https://example.org pip install eqgeo",
])
def test_checker_reports_machine_paths(text):
    """Negative controls: the same checker flags each of these lines."""
    assert machine_specific(text), text


@pytest.mark.parametrize("text", [
    "#!" + _SL + "usr/bin/env bash",
    "python experiments/md/nve_drift.py '<run dir>/checkpoints/best.ckpt' --steps 4000",
    "--test-file ../shared/data/md17/botnet_ethanol/test_MD.xyz",
    "cached under ``$EQGEO_CACHE/native`` (default ``~/.cache/eqgeo/native``)",
    "written to a temporary folder (tempfile.mkdtemp), never inside site-packages",
    "files go to " + _SL + "tmp through tempfile, e.g. " + _SL + "tmp/<random name>",
    "https://github.com/example" + _SL + "work" + _SL + "tree/main and a network" + _SL + "work" + "flow",
    "f\"{tmp_path}" + _SL + "tmp" + _SL + "x.ckpt\" and .venvs/mace/bin/python and experiments/peers/setup.sh mace",
    "pip install mace-torch==0.3.16",
])
def test_checker_leaves_relative_and_generic_text(text):
    """What the checker must not flag: relative paths, placeholders, a generic mention of /tmp."""
    assert not machine_specific(text), machine_specific(text)


def test_peer_environments_are_ignored():
    """The peer environments made by experiments/peers/setup.sh (``.venvs/``) are never committed."""
    _tracked_files()
    run = subprocess.run(["git", "check-ignore", "-q", ".venvs/mace/bin/python"], cwd=REPO)
    assert run.returncode == 0, ".venvs/ is not in .gitignore"


# ----------------------------------------------------------------------------------------------
# No private name used across packages

PACKAGE = REPO / "eqgeo"


def _is_private(name: str) -> bool:
    """One leading underscore: ``_common``, ``_edge_lengths`` (a dunder such as ``__all__`` is not private)."""
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _packages(root: Path) -> set[str]:
    """Dotted names of the packages (folders with an ``__init__.py``) under ``root``, ``root`` included."""
    return {".".join(init.parent.relative_to(root.parent).parts) for init in root.rglob("__init__.py")}


def _owner(path: list[str], packages: set[str]) -> str:
    """The package of the last part of a dotted ``path``: the longest prefix before it that is a package."""
    for k in range(len(path) - 1, 0, -1):
        if ".".join(path[:k]) in packages:
            return ".".join(path[:k])
    return ""


def private_crossings(
    source: str, module: str, packages: set[str], is_package: bool = False
) -> list[tuple[int, str, str]]:
    """``(line number, what, owner)`` for each private name of another package that ``source`` uses.

    ``source`` is the module ``module`` (dotted; ``is_package``: an ``__init__.py``), ``packages``
    the dotted names of the packages of its tree (:func:`_packages`). A private module, subpackage or
    name belongs to the package (the folder) that holds it, its *owner*: ``_edge_lengths`` of
    ``eqgeo.nn.equivariant_conv`` and the module ``_common`` of ``eqgeo.models`` are ``eqgeo.nn``'s
    and ``eqgeo.models``'s. The owner and its subpackages may use it (``eqgeo.nn._tp`` is part of
    ``eqgeo.nn``); any other package may not. Read: every ``import`` and ``from ... import`` of the
    tree, absolute or relative, at any depth (imports inside functions too), and ``name._private``
    where ``name`` is bound by one of them (``buffers._x`` after ``from ..nn import buffers``).
    """
    top = module.split(".")[0]
    here = module if is_package else module.rpartition(".")[0]
    found: list[tuple[int, str, str]] = []
    bound: dict[str, list[str]] = {}

    def check(path: list[str], line: int, what: str) -> None:
        for i in range(1, len(path)):
            if _is_private(path[i]):
                owner = _owner(path[: i + 1], packages)
                if here != owner and not here.startswith(owner + "."):
                    found.append((line, what, owner))
                    return

    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = here.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = base + (node.module.split(".") if node.module else [])
            else:
                target = node.module.split(".")
            if target[0] != top:
                continue
            for alias in node.names:
                path = target + [alias.name]
                check(path, node.lineno, f"from {'.' * node.level}{node.module or ''} import {alias.name}")
                bound[alias.asname or alias.name] = path
        elif isinstance(node, ast.Import):
            for alias in node.names:
                path = alias.name.split(".")
                if path[0] != top:
                    continue
                check(path, node.lineno, f"import {alias.name}")
                bound[alias.asname or path[0]] = path if alias.asname else path[:1]
    inner = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and id(node) not in inner:  # whole chains a.b.c only
            chain, base = [], node
            while isinstance(base, ast.Attribute):
                chain.append(base.attr)
                base = base.value
            if isinstance(base, ast.Name) and base.id in bound:
                check(bound[base.id] + chain[::-1], node.lineno, ".".join([base.id] + chain[::-1]))
    return sorted(set(found))


def test_no_private_name_used_across_packages():
    packages = _packages(PACKAGE)
    modules = sorted(PACKAGE.rglob("*.py"))
    assert len(modules) > 10 and "eqgeo.nn._tp" in packages
    report = []
    for path in modules:
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        module = ".".join(parts[:-1] if is_package else parts)
        for number, what, owner in private_crossings(path.read_text(), module, packages, is_package):
            report.append(f"{path.relative_to(REPO)}:{number}: {what} (private to {owner})")
    assert not report, ("private names used outside their package (make them public in their module's __all__ "
                        "and the package's __init__, or move them):\n" + "\n".join(report))


@pytest.mark.parametrize("module, source", [
    ("eqgeo.data.neighbors", "from ..nn.equivariant_conv import _edge_lengths"),
    ("eqgeo.training.task", "from ..models._common import SpeciesEmbedding"),
    ("eqgeo.training.task", "from ..models import _common"),
    ("eqgeo.inference.docking", "from eqgeo.nn._tp import get_plan"),
    ("eqgeo.inference.docking", "import eqgeo.nn._tp.plan as plan"),
    ("eqgeo.models.potential", "def f():\n    from ..nn import _native\n    return _native"),
    ("eqgeo.models.potential", "from ..nn import buffers\nbuffers._keep(1)"),
    ("eqgeo.models.potential", "import eqgeo.o3\nx = eqgeo.o3._wigner.wigner_3j"),
    ("eqgeo.models.potential", "from ..o3 import Irreps\nIrreps._parse('1x0e')"),
    ("eqgeo.nn.tensor_product", "from ._tp.plan import _tables"),
    ("eqgeo.o3", "from ..nn.gate import _gate_for"),
])
def test_checker_reports_private_names_across_packages(module, source):
    """Negative controls: the same checker flags each of these sources."""
    found = private_crossings(source, module, _packages(PACKAGE), is_package=module == "eqgeo.o3")
    assert len(found) == 1, (source, found)


@pytest.mark.parametrize("module, source", [
    ("eqgeo.models.potential", "from ._common import SpeciesEmbedding, graph_inputs"),
    ("eqgeo.models.baselines", "from .property import _REDUCES"),
    ("eqgeo.models", "from ._common import UnknownSpeciesError"),
    ("eqgeo.nn._tp.native", "from .. import _native"),
    ("eqgeo.nn.tensor_product", "from ._tp import get_plan"),
    ("eqgeo.o3._irreps", "from ._wigner import _wigner_3j_np"),
    ("eqgeo.models.potential", "from torch._dynamo import config\nimport torch\ntorch._C._x"),
    ("eqgeo.models.potential", "from ..nn import Gate\nfrom ..o3 import Irreps\nIrreps.__name__, Gate.irreps_in"),
    ("eqgeo.models.potential", "from ..nn import buffers\nx._private + self._private"),
])
def test_checker_leaves_public_and_same_package_names(module, source):
    """What the checker must not flag: public names, a package's own private names, other libraries."""
    assert not private_crossings(source, module, _packages(PACKAGE), is_package=module == "eqgeo.models"), source
