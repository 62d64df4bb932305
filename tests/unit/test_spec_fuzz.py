"""Spec fuzzing: seeded mutants of bundled studies (values replaced by hostile ones, keys renamed or dropped,
nodes wrapped, bytes of the text edited) are validated and, when valid, compiled into a plan. Every failure
must be a MechsteerError (one located line at the command line); any other exception is a crash. Found this
way: a sweep's `where` over mistyped values raised `TypeError: '<' not supported between 'str' and 'int'`."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest
import yaml

from mechsteer.engine.plan import compile_study
from mechsteer.errors import MechsteerError
from mechsteer.spec.loader import load_study

STUDIES = Path(__file__).resolve().parents[2] / "studies"
SEED = 1_000_003
CASES = 64
"""Mutants per study (seconds per file)."""
VALUES = [
    None,
    True,
    0,
    -1,
    31,
    2**64,
    1e309,
    0.5,
    "",
    "x",
    "{",
    "}",
    "{}",
    "{layer}",
    "{i}",
    "c_{layer:>999999999}",
    "{layer.__class__}",
    "a|b",
    "$\\x$",
    "base[/]",
    "../../x",
    "layers",
    "query_heads",
    "all",
    "x" * 300,
    [],
    {},
    ["a", 1],
    [0, "a", None],
    {"start": 0, "stop": 5},
    {"kind": "add"},
    [[[]]],
]


def mutate(doc, rng: random.Random):
    """The document with one to three edits at random nodes: replace a value, rename or drop a key, wrap a
    value in a list, or swap a list's items for strings (the `where` crash)."""
    import copy

    def walk(node, parent, key, nodes):
        nodes.append((node, parent, key))
        if isinstance(node, dict):
            for k, v in list(node.items()):
                walk(v, node, k, nodes)
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, node, i, nodes)
        return nodes

    doc = copy.deepcopy(doc)
    for _ in range(rng.randint(1, 3)):
        nodes = walk(doc, None, None, [])
        node, parent, key = rng.choice(nodes[1:] or nodes)
        if parent is None:
            continue
        op = rng.choice(["replace", "replace", "replace", "rename", "drop", "wrap", "stringify"])
        if op == "rename" and isinstance(parent, dict):
            parent[rng.choice([v for v in VALUES if isinstance(v, (str, int)) and not isinstance(v, bool)])] = (
                parent.pop(key)
            )
        elif op == "drop" and isinstance(parent, dict):
            del parent[key]
        elif op == "wrap":
            parent[key] = [node]
        elif op == "stringify" and isinstance(node, list):
            parent[key] = [str(v) if rng.random() < 0.5 else v for v in node]
        else:
            parent[key] = copy.deepcopy(rng.choice(VALUES))
    return doc


def edit_text(text: str, rng: random.Random) -> str:
    """One to three character-level edits of the YAML text."""
    t = list(text)
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(len(t) + 1)
        op = rng.choice(["delete", "insert", "duplicate"])
        if op == "delete":
            del t[i : i + rng.randint(1, 8)]
        elif op == "insert":
            t[i:i] = list(rng.choice([":", "- ", "{", "}", "[", "]", "&a ", "*a", "\t", "'", "!!", "\n  ", "|", "#"]))
        else:
            j = rng.randrange(len(t))
            t[j:j] = t[j : j + rng.randint(1, 40)]
    return "".join(t)


def _check(path: Path, tmp: Path) -> None:
    """Validate (every profile too) and compile the default profile when it validates (the paper-scale
    profiles take seconds to compile); MechsteerError is the expected failure."""
    ls = load_study(path)
    for profile in ls.spec.profiles:
        load_study(path, profile)
    compile_study(ls, output_root=tmp / "out")


@pytest.mark.parametrize("study", ["composition.yaml", "penultimate.yaml", "readouts_mini.yaml"])
def test_fuzzed_studies_fail_only_with_located_errors(tmp_path, study):
    text = (STUDIES / study).read_text()
    doc = yaml.safe_load(text)
    rng = random.Random(f"{SEED}:{study}")
    crashes, valid = [], 0
    for i in range(CASES):
        mutant = edit_text(text, rng) if i % 4 == 3 else yaml.safe_dump(mutate(doc, rng), sort_keys=False)
        path = tmp_path / f"{i}.yaml"
        path.write_text(
            re.sub(r"\b(train_paper(?:_llama)?\.yaml|train_mini\.yaml)", lambda m: str(STUDIES / m.group(1)), mutant)
        )
        try:
            _check(path, tmp_path)
            valid += 1
        except MechsteerError:
            pass
        except Exception as e:  # noqa: BLE001 - a crash is what this test looks for
            crashes.append(f"mutant {i} of {study}: {type(e).__name__}: {str(e)[:300]}\n{mutant[:2000]}")
    assert crashes == [], "\n\n".join(crashes[:3])
    assert valid > 0  # some mutants stay valid, so compilation is exercised too
