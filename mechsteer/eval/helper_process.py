"""Run a function in a helper process under a wall-clock limit; a call that overruns kills its helper.

Why: math-verify bounds its parsing and verification with `signal.alarm`, which only works on a process's
main thread. lm-eval and thread pools grade from worker threads, where those limits are off, so one
pathological answer could hang a grading worker forever. Off the main thread the grader therefore sends the
work to a helper process: there it runs on the helper's main thread (math-verify's own limits work again),
and the caller waits at most `timeout` seconds; a helper that does not answer in time is killed and the call
raises `TimeoutError` (the grader counts that answer as not verified).

A helper is a fresh interpreter in isolated mode (`python -I`: no current folder on `sys.path`, no
`PYTHON*` variables, no user site-packages), so a `json.py` or `math_verify.py` in the working directory is
never imported; the one folder it needs beyond the standard library and installed packages, the folder
mechsteer is imported from here, is passed explicitly (it is put first, so a checkout wins over an installed
copy, as it does in the caller). Each request names its function and the folder the caller imports that
function's module from (`{"fn": "module:function", "path": "/abs/folder", "args": [...]}`, one JSON line on
stdin; one JSON line answers on stdout). The protocol has its own copy of stdout: anything the function
prints (from Python or C) goes to stderr, which is discarded, so it cannot corrupt an answer.

Helpers are started on first use (not by fork, so nothing of the caller's threads or model memory is copied),
reused while they behave, limited to `MAX_HELPERS` at once, and exit when the parent closes their stdin or
dies. Arguments and results must be JSON values. A helper that dies or answers garbage in the middle of a call
raises `HelperFailed` (the work may be what killed it); one that cannot be started raises `HelperUnavailable`.
"""

from __future__ import annotations

import atexit
import importlib
import importlib.util
import json
import os
import queue
import subprocess
import sys
import threading
from pathlib import Path

MAX_HELPERS = 4


class HelperUnavailable(RuntimeError):
    """A helper process could not be started, or could not import the function it was asked to run."""


class HelperFailed(RuntimeError):
    """A helper process died or answered garbage while running a call (not a timeout)."""


# What the isolated helper runs: put the folder mechsteer is imported from first on sys.path, then serve.
_BOOTSTRAP = "import sys; sys.path.insert(0, sys.argv[1]); from mechsteer.eval.helper_process import _serve; _serve()"


def import_root(module: str) -> str:
    """The absolute `sys.path` folder this process imports `module` from (e.g. the checkout holding
    `mechsteer/`), so a helper can import the same file without inheriting this process's whole path."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin or not os.path.isabs(spec.origin):
        raise HelperUnavailable(f"module {module!r} has no file a helper process could import")
    origin = Path(spec.origin)
    depth = module.count(".") + (2 if origin.name == "__init__.py" else 1)
    return str(origin.parents[depth - 1])


def helper_command() -> list[str]:
    """The command line of a helper: this interpreter, isolated, told only where mechsteer lives."""
    return [sys.executable, "-I", "-c", _BOOTSTRAP, import_root(__name__)]


class _Helper:
    def __init__(self):
        try:
            self.proc = subprocess.Popen(
                helper_command(),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
                encoding="utf-8",
            )
        except OSError as e:
            raise HelperUnavailable(f"cannot start a helper process: {e}") from None
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put("")  # end of file: the helper is gone

    def call(self, fn: str, args: list, timeout: float):
        request = {"fn": fn, "path": import_root(fn.partition(":")[0]), "args": args}
        try:
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
        except OSError as e:
            raise HelperFailed(f"helper process gone: {e}") from None
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"{fn} did not finish within {timeout:g} s") from None
        if not line:
            raise HelperFailed("helper process exited")
        try:
            answer = json.loads(line)
        except ValueError:
            raise HelperFailed(f"helper process answered garbage: {line[:200]!r}") from None
        if not isinstance(answer, dict) or not ({"error", "result"} & answer.keys()):
            raise HelperFailed(f"helper process answered garbage: {line[:200]!r}")
        if "error" in answer:
            raise HelperUnavailable(answer["error"])
        return answer["result"]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


class HelperPool:
    """Helper processes shared by all threads of this process."""

    def __init__(self, max_helpers: int = MAX_HELPERS):
        self._idle: list[_Helper] = []
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(max_helpers)
        self.killed = 0
        """Helpers killed because a call overran or failed (for tests and diagnostics)."""

    def call(self, fn: str, args: list, timeout: float):
        """`fn(*args)` in a helper (`fn` = "module:function"); TimeoutError after `timeout` seconds."""
        with self._slots:
            with self._lock:
                helper = self._idle.pop() if self._idle else None
            helper = helper or _Helper()
            try:
                result = helper.call(fn, args, timeout)
            except BaseException:
                helper.kill()
                self.killed += 1
                raise
            with self._lock:
                self._idle.append(helper)
            return result

    def close(self) -> None:
        """Kill every idle helper (at interpreter exit); busy ones end with their call."""
        with self._lock:
            idle, self._idle = self._idle, []
        for helper in idle:
            helper.kill()


_POOL: HelperPool | None = None
_POOL_LOCK = threading.Lock()


def helper_pool() -> HelperPool:
    """The process-wide pool (created on first use, closed at exit)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = HelperPool()
            atexit.register(_POOL.close)
        return _POOL


def _serve() -> None:
    """The helper's loop: one request per stdin line, one answer per line on the protocol's own copy of
    stdout, until stdin closes. File descriptor 1 is pointed at stderr first, so prints cannot corrupt it."""
    sys.stdout.flush()
    answers = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    for line in sys.stdin:
        try:
            request = json.loads(line)
            module, _, name = request["fn"].partition(":")
            if request["path"] not in sys.path:
                sys.path.insert(0, request["path"])
            result = getattr(importlib.import_module(module), name)(*request["args"])
            answer = json.dumps({"result": result})
        except Exception as e:  # noqa: BLE001 - reported to the caller, the helper keeps serving
            answer = json.dumps({"error": f"{type(e).__name__}: {e}"})
        answers.write(answer + "\n")
        answers.flush()
