"""Run a function in a helper process under a wall-clock limit; a call that overruns kills its helper.

Why: math-verify bounds its parsing and verification with `signal.alarm`, which only works on a process's
main thread. lm-eval and thread pools grade from worker threads, where those limits are off, so one
pathological answer could hang a grading worker forever. Off the main thread the grader therefore sends the
work to a helper process: there it runs on the helper's main thread (math-verify's own limits work again),
and the caller waits at most `timeout` seconds; a helper that does not answer in time is killed and the call
raises `TimeoutError` (the grader counts that answer as not verified).

A helper is `python -m mechsteer.eval.helper_process`, reading one JSON request per line on stdin
(`{"fn": "module:function", "args": [...]}`) and answering one JSON line on stdout. Helpers are started on
first use (not by fork, so nothing of the caller's threads or model memory is copied), reused while they
behave, limited to `MAX_HELPERS` at once, and exit when the parent closes their stdin or dies. Arguments and
results must be JSON values.
"""

from __future__ import annotations

import atexit
import importlib
import json
import os
import queue
import subprocess
import sys
import threading

MAX_HELPERS = 4


class HelperUnavailable(RuntimeError):
    """A helper process could not be started or broke down (not a timeout)."""


class _Helper:
    def __init__(self):
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mechsteer.eval.helper_process"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                env=env,
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
        try:
            self.proc.stdin.write(json.dumps({"fn": fn, "args": args}) + "\n")
            self.proc.stdin.flush()
        except OSError as e:
            raise HelperUnavailable(f"helper process gone: {e}") from None
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"{fn} did not finish within {timeout:g} s") from None
        if not line:
            raise HelperUnavailable("helper process exited")
        answer = json.loads(line)
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
    """The helper's loop: one request per stdin line, one answer per stdout line, until stdin closes."""
    for line in sys.stdin:
        try:
            request = json.loads(line)
            module, _, name = request["fn"].partition(":")
            result = getattr(importlib.import_module(module), name)(*request["args"])
            answer = {"result": result}
        except Exception as e:  # noqa: BLE001 - reported to the caller, the helper keeps serving
            answer = {"error": f"{type(e).__name__}: {e}"}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    _serve()
