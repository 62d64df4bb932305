"""Every repository file the documentation points at exists: a renamed or never-committed file otherwise leaves
a dead reference that a reader follows in vain (`benchmarks/calibrate_mini.md` and `reference/rl_cpu.md` were
such cases).

Checked: backticked repo paths in README.md, CONTRIBUTING.md and docs/; every repo path (backticked or not) in
the package's sources and the bundled studies; and the files the bundled data's Markdown notes name (relative
to their own folder or to the repository). `<...>` marks a placeholder, not a file; globs must match something.
"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PREFIXES = ("mechsteer/", "benchmarks/", "studies/", "scripts/", "docs/", "tests/", "schemas/", ".ci/", "reference/")
"""Repo-relative paths start with one of these (`reference/` is not a repo folder: it names notes outside the
repository, which a reader cannot open, so any mention is reported)."""
BACKTICKED = re.compile(r"`([^`\n]+)`")
PATH = re.compile(r"(?<![\w./-])((?:" + "|".join(map(re.escape, PREFIXES)) + r")[\w./*<>{}-]*[\w*>/])")
FILE_NAME = re.compile(r"^[\w./*-]+\.(md|json|yaml|py|safetensors|png|csv|txt)$")


def _exists(path: str, *bases: Path) -> bool:
    if "*" in path:
        return any(any(b.glob(path)) for b in bases)
    return any((b / path).exists() for b in bases)


def _placeholder(path: str) -> bool:
    return "<" in path or "{" in path


def dead_paths(text: str, where: str, *, backticked_only: bool) -> list[str]:
    """`where:line: path` for each repo path in `text` that does not exist."""
    bad = []
    for i, line in enumerate(text.splitlines(), 1):
        spans = [m.group(1) for m in BACKTICKED.finditer(line)] if backticked_only else [line]
        for span in spans:
            for m in PATH.finditer(span):
                path = m.group(1).rstrip(".")
                if not _placeholder(path) and not _exists(path, REPO):
                    bad.append(f"{where}:{i}: {path}")
    return bad


def test_backticked_paths_in_the_documentation_exist():
    docs = [REPO / "README.md", REPO / "CONTRIBUTING.md", *sorted((REPO / "docs").rglob("*.md"))]
    bad = [p for f in docs for p in dead_paths(f.read_text(), str(f.relative_to(REPO)), backticked_only=True)]
    assert not bad, "the documentation names files that do not exist:\n" + "\n".join(bad)


def test_paths_in_the_package_and_the_studies_exist():
    files = [*sorted((REPO / "mechsteer").rglob("*.py")), *sorted((REPO / "studies").glob("*.yaml"))]
    bad = [p for f in files for p in dead_paths(f.read_text(), str(f.relative_to(REPO)), backticked_only=False)]
    assert not bad, "the package or a study names files that do not exist:\n" + "\n".join(bad)


def test_files_named_by_the_bundled_datas_notes_exist():
    bad = []
    for note in sorted((REPO / "mechsteer" / "data").rglob("*.md")):
        for i, line in enumerate(note.read_text().splitlines(), 1):
            for span in BACKTICKED.findall(line):
                for word in span.split():
                    word = word.rstrip(".,:;)")
                    if not FILE_NAME.match(word) or word.startswith("outputs/"):  # a run's output, not a repo file
                        continue
                    if not _placeholder(word) and not _exists(word, note.parent, REPO):
                        bad.append(f"{note.relative_to(REPO)}:{i}: {word}")
    assert not bad, "the bundled data's notes name files that do not exist:\n" + "\n".join(bad)


def test_a_dead_reference_is_reported_and_placeholders_and_globs_are_not():
    text = "see `benchmarks/calibrate_mini.md`, `reference/rl_cpu.md`,\n`studies/<name>.yaml`, `studies/*.yaml`"
    assert dead_paths(text, "x.md", backticked_only=True) == [
        "x.md:1: benchmarks/calibrate_mini.md",
        "x.md:1: reference/rl_cpu.md",
    ]
    assert dead_paths("results in benchmarks/results/nothing_here.md.", "m.py", backticked_only=False) == [
        "m.py:1: benchmarks/results/nothing_here.md"
    ]
    assert dead_paths("not backticked: benchmarks/nothing.md", "x.md", backticked_only=True) == []
