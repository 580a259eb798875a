"""Nothing machine-specific in the repository (issue 11, item 6).

Every tracked text file is searched for absolute paths of one machine (a project or home folder,
a temporary run folder, an interpreter's site-packages) and for package-index URLs: committed
scripts find what they need relative to the repository root, results show commands relative to
it, and the peer environments come from ``experiments/peers/setup.sh`` with plain ``pip install``.

The patterns are assembled from pieces, so that this file itself (which is scanned like any other)
does not match them; the negative controls run the same checker on small strings that do.
"""

from __future__ import annotations

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
