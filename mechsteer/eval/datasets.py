"""The paper's math benchmarks (plus GSM8K): where they come from and how a row becomes a problem.

Every benchmark row is normalised to `{"id": str, "problem": str, "answer": str}`, the format the graders
(`mechsteer.eval.grading`) and the `mini` task (`mechsteer.eval.mini_task`) share.

Sources, as in the authors' `eval/eval.py:get_ds` (paper digest section 5):

| name          | hub dataset                  | config(s)                 | split | gold answer                  |
|---------------|------------------------------|---------------------------|-------|------------------------------|
| aime24        | Maxwell-Jia/AIME_2024        | -                         | train | `Answer` / `answer`          |
| aime25        | opencompass/AIME2025         | AIME2025-I + AIME2025-II  | test  | `answer`                     |
| amc23         | knoveleng/AMC-23             | -                         | train | `answer` (a float, "27.0")   |
| math500       | HuggingFaceH4/MATH-500       | -                         | test  | `answer`                     |
| minerva_math  | knoveleng/Minerva-Math       | -                         | train | last `\\boxed{}` of solution |
| olympiadbench | knoveleng/OlympiadBench      | -                         | train | `final_answer[0]`            |
| gsm8k         | openai/gsm8k                 | main                      | test  | text after `#### `           |

Offline (the hub unreachable, or `HF_HUB_OFFLINE` / `HF_DATASETS_OFFLINE` set: both detected at once, without
waiting for download retries), pass a data directory
holding `<folder>/test.jsonl` per benchmark; the copies in the project's shared data folder load as they are.
The project never ships these test sets itself.

AMC gold answers are kept as given ("27.0"); both graders accept "27" for them (math-verify compares values,
the last-number grader compares exact fractions).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mechsteer.errors import MechsteerError
from mechsteer.eval.grading import extract_boxed_answer

Row = dict[str, Any]

_TRUE_ENV = {"1", "true", "yes", "on"}


class DatasetUnavailableError(MechsteerError):
    """A benchmark cannot be loaded (hub unreachable or offline, local file missing or malformed).

    The message always says which benchmark, where it was looked for, and how to fix it; being a
    MechsteerError, it reaches the command line as one line without a traceback.
    """


class DatasetFormatError(DatasetUnavailableError):
    """A benchmark file was found but a row lacks the fields its normaliser needs."""


# ---------------------------------------------------------------------------------------------------------
# Row normalisers: hub and local copies name columns differently (Problem/Answer vs problem/answer).
# ---------------------------------------------------------------------------------------------------------


def _field(row: Row, *names: str) -> Any:
    """The first of `names` present in `row` with a non-None value (None when none is)."""
    for name in names:
        if row.get(name) is not None:
            return row[name]
    return None


def _text(value: Any) -> str:
    """A field value as stripped text ('' for None)."""
    return "" if value is None else str(value).strip()


def _row_id(row: Row, index: int, *names: str) -> str:
    """The row's own id when it has one, else its position in the file/split."""
    value = _field(row, *names)
    return str(index) if value is None else str(value)


def _unbox(answer: str) -> str:
    """Strip a `\\boxed{}` wrapper from a gold answer (the authors' loader asserted none remained)."""
    if "boxed" in answer:
        inner = extract_boxed_answer(answer)
        if inner is not None:
            return inner.strip()
    return answer


def _normalise_aime24(row: Row, index: int) -> Row:
    return {
        "id": _row_id(row, index, "id", "ID"),
        "problem": _text(_field(row, "problem", "Problem", "question")),
        "answer": _text(_field(row, "answer", "Answer")),
    }


def _normalise_aime25(row: Row, index: int) -> Row:
    return {
        "id": _row_id(row, index, "id", "ID"),
        "problem": _text(_field(row, "problem", "question", "Problem")),
        "answer": _text(_field(row, "answer", "Answer")),
    }


def _normalise_amc23(row: Row, index: int) -> Row:
    return {
        "id": _row_id(row, index, "id"),
        "problem": _text(_field(row, "problem", "question", "Problem")),
        "answer": _text(_field(row, "answer", "Answer")),
    }


def _normalise_math500(row: Row, index: int) -> Row:
    return {
        "id": _row_id(row, index, "unique_id", "id"),
        "problem": _text(_field(row, "problem", "Problem")),
        "answer": _unbox(_text(_field(row, "answer", "Answer"))),
    }


def _normalise_minerva(row: Row, index: int) -> Row:
    boxed = extract_boxed_answer(_text(_field(row, "solution", "Solution")))
    return {
        "id": _row_id(row, index, "idx", "id"),
        "problem": _text(_field(row, "problem", "Problem", "question")),
        "answer": _text(boxed),
    }


def _normalise_olympiadbench(row: Row, index: int) -> Row:
    question = _text(_field(row, "question", "problem"))
    context = _text(row.get("context"))
    final = row.get("final_answer")
    if isinstance(final, (list, tuple)):
        final = final[0] if final else None
    answer = _text(final) or _text(_field(row, "answer"))
    return {
        "id": _row_id(row, index, "id"),
        "problem": f"{context}\n\n{question}" if context else question,
        "answer": _unbox(answer),
    }


def _normalise_gsm8k(row: Row, index: int) -> Row:
    solution = _text(_field(row, "answer"))
    _, sep, final = solution.rpartition("#### ")
    return {
        "id": _row_id(row, index, "idx", "id"),
        "problem": _text(_field(row, "question", "problem")),
        "answer": final.strip().replace(",", "") if sep else "",
    }


def _normalise_deepscaler(row: Row, index: int) -> Row:
    return {
        "id": _row_id(row, index, "id"),
        "problem": _text(_field(row, "problem", "Problem")),
        "answer": _text(_field(row, "answer", "Answer")),
    }


# ---------------------------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Benchmark:
    """Where one benchmark lives (hub and local folder) and how to normalise its rows."""

    name: str
    hub_id: str
    configs: tuple[str | None, ...]
    split: str
    folder: str
    normalise: Callable[[Row, int], Row]
    expected_size: int
    drop_unanswered: bool = False
    """Drop rows without a problem or answer (a training set, as the authors filtered DeepScaleR) instead of
    treating one as a format error (a benchmark must be complete)."""

    @property
    def local_file(self) -> str:
        """Path of the local copy relative to a data directory."""
        return f"{self.folder}/test.jsonl"


BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in (
        Benchmark("aime24", "Maxwell-Jia/AIME_2024", (None,), "train", "aime24", _normalise_aime24, 30),
        Benchmark(
            "aime25",
            "opencompass/AIME2025",
            ("AIME2025-I", "AIME2025-II"),
            "test",
            "aime25",
            _normalise_aime25,
            30,
        ),
        Benchmark("amc23", "knoveleng/AMC-23", (None,), "train", "amc23", _normalise_amc23, 40),
        Benchmark("math500", "HuggingFaceH4/MATH-500", (None,), "test", "math500", _normalise_math500, 500),
        Benchmark("minerva_math", "knoveleng/Minerva-Math", (None,), "train", "minerva_math", _normalise_minerva, 272),
        Benchmark(
            "olympiadbench",
            "knoveleng/OlympiadBench",
            (None,),
            "train",
            "olympiadbench",
            _normalise_olympiadbench,
            675,
        ),
        Benchmark("gsm8k", "openai/gsm8k", ("main",), "test", "gsm8k", _normalise_gsm8k, 1319),
    )
}


PROMPT_SETS: dict[str, Benchmark] = {
    "deepscaler": Benchmark(
        "deepscaler",
        "agentica-org/deep_scale_r-preview-dataset",
        (None,),
        "train",
        "deepscaler",
        _normalise_deepscaler,
        40315,
        drop_unanswered=True,
    ),
}
"""Training sets whose prompts readouts may analyse (never evaluation tasks): the paper's persistence, logit-lens
and token-shift analyses used DeepScaleR training prompts. Local copy: `<data_dir>/deepscaler/test.jsonl` (the
one file name every local copy uses)."""


def get_benchmark(name: str) -> Benchmark:
    """The table entry for `name` (a benchmark or a prompt set); unknown names raise KeyError listing them."""
    try:
        return BENCHMARKS[name] if name in BENCHMARKS else PROMPT_SETS[name]
    except KeyError:
        raise KeyError(f"unknown benchmark {name!r}; known: {', '.join([*BENCHMARKS, *PROMPT_SETS])}") from None


# ---------------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------------


def _fix_hint(bench: Benchmark) -> str:
    return f"pass --data-dir / evaluation.data_dir pointing at a folder with {bench.local_file}"


def hub_offline() -> bool:
    """True when the environment asks Hugging Face libraries not to touch the network."""
    return any(os.environ.get(v, "").strip().lower() in _TRUE_ENV for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def _no_hub_reason() -> str | None:
    """Why hub datasets cannot be downloaded now (offline setting or no connection; probed once per
    process, see `mechsteer.hub`), or None."""
    from mechsteer.hub import hub_unreachable

    return hub_unreachable(("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def _read_jsonl(path: Path, bench: Benchmark) -> list[Row]:
    """Parse a jsonl file of JSON objects; blank lines are skipped, and a line that is not UTF-8, not JSON, or
    not an object raises DatasetFormatError naming the file and line."""
    rows: list[Row] = []
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            where = f"{bench.name}: {path}:{lineno}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DatasetFormatError(
                    f"{where}: not UTF-8 text ({exc.reason} at byte {exc.start}) (hint: save the file as UTF-8)"
                ) from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetFormatError(f"{where}: not valid JSON ({exc.msg})") from None
            except RecursionError:
                raise DatasetFormatError(f"{where}: JSON nested too deeply") from None
            if not isinstance(row, dict):
                raise DatasetFormatError(
                    f'{where}: a row must be a JSON object such as {{"problem": ..., "answer": ...}}, '
                    f"got {type(row).__name__}"
                )
            if not is_unicode(line, row):
                raise DatasetFormatError(f"{where}: not valid Unicode text (an escaped lone surrogate such as \\ud800)")
            rows.append(row)
    return rows


def is_unicode(line: str, row: Any) -> bool:
    """Whether a parsed JSON line holds only valid Unicode text: `\\ud800` escapes parse to lone surrogates,
    which no later step (tokenizer, UTF-8 writer) can handle."""
    if "\\u" not in line:
        return True
    try:
        json.dumps(row, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _load_local(bench: Benchmark, data_dir: Path) -> list[Row]:
    path = data_dir / bench.folder / "test.jsonl"
    if not path.is_file():
        raise DatasetUnavailableError(
            f"benchmark {bench.name!r}: local file {path} not found (hint: {_fix_hint(bench)})"
        )
    return _read_jsonl(path, bench)


def _load_hub(bench: Benchmark) -> list[Row]:
    if hub_offline():
        raise DatasetUnavailableError(
            f"benchmark {bench.name!r}: the Hugging Face hub is switched off (HF_HUB_OFFLINE / "
            f"HF_DATASETS_OFFLINE is set), so {bench.hub_id} cannot be downloaded (hint: {_fix_hint(bench)})"
        )
    reason = _no_hub_reason()
    if reason:
        raise DatasetUnavailableError(
            f"benchmark {bench.name!r}: the Hugging Face hub is unreachable ({reason}), so {bench.hub_id} "
            f"cannot be downloaded (hint: {_fix_hint(bench)})"
        )
    try:
        import datasets

        rows: list[Row] = []
        for config in bench.configs:
            rows.extend(datasets.load_dataset(bench.hub_id, config, split=bench.split))
        return rows
    except Exception as exc:  # network, auth and cache errors all mean "not available here"
        raise DatasetUnavailableError(
            f"benchmark {bench.name!r}: could not load {bench.hub_id} from the Hugging Face hub "
            f"({type(exc).__name__}: {exc}) (hint: {_fix_hint(bench)})"
        ) from exc


def _normalise_rows(bench: Benchmark, raw: Iterable[Row], source: str) -> list[Row]:
    """Normalise every row; a row without a problem or answer is a format error naming the row."""
    rows = []
    for index, row in enumerate(raw):
        norm = bench.normalise(dict(row), index)
        if bench.drop_unanswered and (not norm["problem"] or not norm["answer"]):
            continue
        if not norm["problem"] or not norm["answer"]:
            missing = "problem" if not norm["problem"] else "answer"
            raise DatasetFormatError(
                f"benchmark {bench.name!r}: {source}: row {index} (id {norm['id']}) has no {missing}"
            )
        rows.append(norm)
    return rows


def load_benchmark(name: str, data_dir: str | Path | None, limit: int | None = None) -> list[Row]:
    """Load benchmark `name` as `[{"id", "problem", "answer"}, ...]`, in file/split order.

    With `data_dir`, reads `<data_dir>/<folder>/test.jsonl`; without, downloads the hub dataset the paper
    used. `limit` keeps the first `limit` problems. Raises `DatasetUnavailableError` (what failed, where,
    and the `--data-dir` fix) when the data cannot be had, and `KeyError` for an unknown name.
    """
    bench = get_benchmark(name)
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    if data_dir is not None:
        path = Path(data_dir).expanduser()
        raw, source = _load_local(bench, path), str(path / bench.local_file)
    else:
        raw, source = _load_hub(bench), bench.hub_id
    rows = _normalise_rows(bench, raw, source)
    return rows if limit is None else rows[:limit]


def dataset_hash(rows: Iterable[Row]) -> str:
    """sha256 hex digest of the rows as canonical JSON (sorted keys, no whitespace): a cache key.

    Any change to a problem, answer, id or the order changes the hash.
    """
    canonical = json.dumps(list(rows), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
