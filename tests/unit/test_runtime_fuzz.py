"""The files a run reads besides its study (benchmark and training data, vector files, a folder's plan.json, a
training run's best.json), broken on purpose: each named case from the issue, then a seeded mutation loop over
valid files. Every failure must be a MechsteerError (one located line at the command line), never another
exception; `mechsteer report DIR` on a broken plan.json exits 1 with one line and no traceback."""

from __future__ import annotations

import json
import random
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import DATA_FIXTURES
from recorded_runs import eval_cell, generate_cell, write_run
from typer.testing import CliRunner

from mechsteer.errors import MechsteerError, VectorError

SEED = 20240518
HOSTILE_VALUES = [
    None,
    True,
    0,
    -1,
    2**70,
    1e308,
    float("nan"),
    "",
    "x",
    "{",
    "{}",
    "a|b",
    "../../etc/passwd",
    "$\\x$",
    "[/]",
    "\ud800",
    "é" * 300,
    [],
    {},
    [[[]]],
    {"a": {"b": []}},
    [1, "a", None],
]


# ------------------------------------------------------------------------------------------------ mutators
def mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    """One to three byte-level edits: flip, delete a span, insert hostile bytes, truncate, duplicate a span."""
    b = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        op = rng.choice(["flip", "delete", "insert", "truncate", "duplicate"])
        i = rng.randrange(len(b) + 1)
        if op == "flip" and b:
            b[min(i, len(b) - 1)] = rng.randrange(256)
        elif op == "delete":
            del b[i : i + rng.randint(1, 16)]
        elif op == "insert":
            b[i:i] = rng.choice([b"\xff\xfe", b"\x00", b'"', b"{", b"]", b"\n", b"\xc3", b"[[[[", b"null", b"-1e999"])
        elif op == "truncate":
            del b[i:]
        elif b:
            j = rng.randrange(len(b))
            b[j:j] = b[j : j + rng.randint(1, 64)]
    return bytes(b)


def mutate_json(obj, rng: random.Random):
    """The JSON value with one node replaced by a hostile value, one key deleted, or a node wrapped in a list."""
    obj = json.loads(json.dumps(obj))
    paths = []

    def walk(node, path):
        paths.append(path)
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, path + (k,))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, path + (i,))

    walk(obj, ())
    path = rng.choice(paths)
    if not path:
        return rng.choice(HOSTILE_VALUES)
    parent = obj
    for p in path[:-1]:
        parent = parent[p]
    op = rng.choice(["replace", "replace", "delete", "wrap"])
    if op == "delete" and isinstance(parent, dict):
        del parent[path[-1]]
    elif op == "wrap":
        parent[path[-1]] = [parent[path[-1]]]
    else:
        parent[path[-1]] = rng.choice(HOSTILE_VALUES)
    return obj


def dumps(obj) -> bytes:
    return json.dumps(obj).encode("utf-8", "surrogatepass")


class Crashes:
    """Collects every exception that is not a MechsteerError, with the case that raised it."""

    def __init__(self):
        self.found: list[str] = []

    def run(self, label: str, fn):
        try:
            return fn()
        except MechsteerError:
            return None
        except Exception as e:  # noqa: BLE001 - the point of the test
            self.found.append(f"{label}: {type(e).__name__}: {str(e)[:200]}")
            return None


# ------------------------------------------------------------------------------------------------ data files
def _benchmark(tmp_path: Path, content: bytes):
    from mechsteer.eval.datasets import load_benchmark

    (tmp_path / "math500").mkdir(parents=True, exist_ok=True)
    (tmp_path / "math500" / "test.jsonl").write_bytes(content)
    return load_benchmark("math500", tmp_path)


def _training(tmp_path: Path, content: bytes):
    from mechsteer.train.data import load_problems

    tmp_path.mkdir(parents=True, exist_ok=True)
    f = tmp_path / "train.jsonl"
    f.write_bytes(content)
    data = SimpleNamespace(kind="jsonl", path="train.jsonl", problem_field="problem", answer_field="answer")
    return load_problems(data, lambda p: tmp_path / p, 0)


@pytest.mark.parametrize(
    "content, fragment",
    [
        (b'"a string"\n', "must be a JSON object"),
        (b"[1, 2]\n", "must be a JSON object"),
        (b'{"problem": "1+1", "answer": "2"}\nnull\n', ":2: a row must be a JSON object"),
        (b'{"problem": "caf\xe9", "answer": "2"}\n', ":1: not UTF-8"),
        (b'{"problem": "\\ud800", "answer": "2"}\n', ":1: not valid Unicode"),
        (b"[" * 100_000 + b"]" * 100_000 + b"\n", ""),
    ],
    ids=["string", "list", "null-second-line", "latin-1", "surrogate", "deep"],
)
def test_a_data_row_that_is_not_a_utf8_json_object_is_a_located_error(tmp_path, content, fragment):
    for load in (_benchmark, _training):
        with pytest.raises(MechsteerError) as e:
            load(tmp_path / load.__name__, content)
        assert fragment in str(e.value), str(e.value)


def test_fuzzed_data_files_raise_only_located_errors(tmp_path):
    rng = random.Random(SEED)
    base = (DATA_FIXTURES / "math500" / "test.jsonl").read_bytes()
    rows = [json.loads(line) for line in base.decode().splitlines() if line.strip()]
    crashes = Crashes()
    for i in range(80):
        if i % 2:
            content = mutate_bytes(base, rng)
        else:
            content = b"\n".join(dumps(mutate_json(r, rng)) if rng.random() < 0.5 else dumps(r) for r in rows)
        for load in (_benchmark, _training):
            crashes.run(f"case {i} {load.__name__} {content[:80]!r}", lambda: load(tmp_path / str(i), content))  # noqa: B023
    assert crashes.found == []


# ------------------------------------------------------------------------------------------------ vector files
def _vector_file(tmp_path: Path) -> Path:
    from mechsteer.vectors.vector_set import VectorSet

    return VectorSet(torch.randn(4, 8), [0, 2, 3], {"model": "tiny"}).save(tmp_path / "v.safetensors")


def test_a_two_dimensional_layers_tensor_is_a_vector_error(tmp_path):
    from safetensors.torch import save_file

    from mechsteer.vectors.vector_set import load_vector_set

    cases = {
        "2d": torch.tensor([[0, 1], [2, 3]]),
        "float": torch.tensor([0.0, 1.5]),
        "range": torch.tensor([0, 9]),
        "twice": torch.tensor([1, 1]),
        "bool": torch.tensor([True, False]),
    }
    for name, layers in cases.items():
        f = tmp_path / f"{name}.safetensors"
        save_file({"vectors": torch.zeros(4, 8), "layers": layers}, str(f))
        with pytest.raises(VectorError) as e:
            load_vector_set(f)
        assert str(f) in str(e.value) and "'layers'" in str(e.value), (name, str(e.value))


def test_fuzzed_vector_files_raise_only_vector_errors(tmp_path):
    from safetensors.torch import save_file

    from mechsteer.vectors.vector_set import load_vector_set

    rng = random.Random(SEED)
    good = _vector_file(tmp_path).read_bytes()
    crashes = Crashes()
    dtypes = [torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.int8, torch.bool]
    for i in range(80):
        f = tmp_path / f"m{i}.safetensors"
        if i % 2:
            f.write_bytes(mutate_bytes(good, rng))
        else:
            tensors = {}
            for key in rng.sample(["vectors", "layers", "other"], rng.randint(1, 3)):
                shape = [rng.randint(0, 4) for _ in range(rng.randint(0, 3))]
                dtype = rng.choice(dtypes)
                t = (torch.randn(shape) * rng.choice([1, 1e30, float("inf")])).to(dtype)
                tensors[key] = t
            save_file(tensors, str(f), metadata={"format": rng.choice(["mechsteer.vectors/1", "x", ""])})
        crashes.run(f"case {i}", lambda: load_vector_set(f))  # noqa: B023
    assert crashes.found == []


# ------------------------------------------------------------------------------------------------ plan.json
def _run(tmp_path: Path) -> Path:
    cells = [eval_cell("m", c, [1, 0, 1, 0]) for c in ("base", "steer")]
    cells += [generate_cell("m", c, [1, 1, 0, 0]) for c in ("base", "steer")]
    return write_run(tmp_path / "run", study="fuzz", cells=cells, evaluation={"tasks": ["mini"], "seeds": [0]})


def test_a_plan_json_of_an_empty_object_is_one_line(tmp_path):
    from mechsteer.api import load_results
    from mechsteer.cli.app import app

    run = _run(tmp_path)
    (run / "plan.json").write_text("{}")
    with pytest.raises(MechsteerError) as e:
        load_results(run)
    assert "plan.json" in str(e.value) and "study" in str(e.value)
    r = CliRunner().invoke(app, ["report", str(run)])
    assert r.exit_code == 1 and "Traceback" not in r.output and r.output.startswith("error: "), r.output
    assert isinstance(r.exception, SystemExit)


def test_a_plan_json_cannot_point_outside_its_cells(tmp_path):
    from mechsteer.results import Results

    run = _run(tmp_path)
    plan = json.loads((run / "plan.json").read_text())
    plan["cells"][0]["hash"] = "../../../etc"
    (run / "plan.json").write_text(json.dumps(plan))
    with pytest.raises(MechsteerError) as e:
        Results.load(run)
    assert "cells.0.hash" in str(e.value)


def test_fuzzed_plan_json_raises_only_located_errors(tmp_path):
    from mechsteer.report import write_report
    from mechsteer.results import Results

    rng = random.Random(SEED)
    run = _run(tmp_path)
    base = json.loads((run / "plan.json").read_text())
    crashes = Crashes()

    def report():
        write_report(Results.load(run))

    for i in range(40):
        content = mutate_bytes(dumps(base), rng) if i % 4 == 3 else dumps(mutate_json(base, rng))
        (run / "plan.json").write_bytes(content)
        crashes.run(f"case {i} {content[:300]!r}", report)
    assert crashes.found == []


# ------------------------------------------------------------------------------------------------ best.json
def test_fuzzed_best_json_raises_only_vector_errors(tmp_path):
    from mechsteer.train.layout import best_checkpoint_dir

    rng = random.Random(SEED)
    base = {"step": 8, "metric": "greedy_lenient", "value": 0.5, "candidates": {"4": 0.25, "8": 0.5}}
    crashes = Crashes()
    for content in [b"", b"{}", b"[]", b'"8"', b'{"step": "8"}', b'{"step": -1}', b'{"step": true}', b"\xff"]:
        (tmp_path / "best.json").write_bytes(content)
        with pytest.raises(VectorError) as e:
            best_checkpoint_dir(tmp_path, "mechsteer train t.yaml")
        assert "best.json" in str(e.value) and "mechsteer train t.yaml" in str(e.value)
    for i in range(60):
        content = mutate_bytes(dumps(base), rng) if i % 2 else dumps(mutate_json(base, rng))
        (tmp_path / "best.json").write_bytes(content)
        crashes.run(f"case {i} {content!r}", lambda: best_checkpoint_dir(tmp_path, "cmd"))
    assert crashes.found == []
