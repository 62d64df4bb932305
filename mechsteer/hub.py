"""Is the Hugging Face hub reachable? Asked once per process, so that a run without network fails at once.

Without this, a hub model or dataset that cannot be downloaded is only reported after huggingface_hub's
retries (about 52 s for a paper-profile run). `hub_unreachable()` answers from the environment
(`HF_HUB_OFFLINE` and friends) or from one TCP connection to the hub's host (`HF_ENDPOINT`, default
huggingface.co:443; the HTTPS proxy instead when one is configured) with a 2 s timeout, and remembers the
answer for the rest of the process. Callers then load from the local cache only, or raise their clear error
(which model or dataset, and the fix: a local directory / --data-dir) straight away.

`resolve_commit` names the commit a hub id (and optional branch or tag) loads, for cache keys: asked of the
hub when it is reachable, else read from the local Hugging Face cache (`refs/<branch>`), which is what
transformers and datasets load offline; when neither answers, it says why instead of guessing.
"""

from __future__ import annotations

import functools
import os
import re
import socket
import urllib.parse
import urllib.request
from pathlib import Path

PROBE_TIMEOUT_S = 2.0
_TRUE = {"1", "true", "yes", "on"}
DEFAULT_ENDPOINT = "https://huggingface.co"


def offline_setting(variables: tuple[str, ...] = ("HF_HUB_OFFLINE",)) -> str | None:
    """`NAME=value` of the first of `variables` set to a true value, else None."""
    for name in variables:
        value = os.environ.get(name, "").strip()
        if value.lower() in _TRUE:
            return f"{name}={value}"
    return None


def tcp_reachable(host: str, port: int, timeout: float) -> bool:
    """One TCP connection attempt (no data sent)."""
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def _probe_target() -> tuple[str, int]:
    """(host, port) to try: the hub endpoint, or the proxy that requests to it would go through."""
    url = urllib.parse.urlsplit(os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT)
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    proxy = urllib.request.getproxies().get(url.scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        p = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        if p.hostname:
            return p.hostname, p.port or (443 if p.scheme == "https" else 80)
    return host, port


@functools.lru_cache(maxsize=1)
def _network_problem() -> str | None:
    host, port = _probe_target()
    if tcp_reachable(host, port, PROBE_TIMEOUT_S):
        return None
    return f"no connection to {host}:{port} within {PROBE_TIMEOUT_S:g} s"


def hub_unreachable(variables: tuple[str, ...] = ("HF_HUB_OFFLINE",)) -> str | None:
    """Why the hub cannot be used (an offline setting among `variables`, or no connection), or None when it
    can. The network probe runs at most once per process."""
    return offline_setting(variables) or _network_problem()


def forget() -> None:
    """Probe again (and resolve commits again) on the next call (tests; a long-lived process whose network
    came back)."""
    _network_problem.cache_clear()
    resolve_commit.cache_clear()


COMMIT = re.compile(r"^[0-9a-f]{40}$")
RESOLVE_TIMEOUT_S = 10.0


def _cached_ref(repo_id: str, repo_type: str, ref: str) -> str | None:
    """The commit `ref` points to in the local Hugging Face cache (read at call time), or None."""
    from huggingface_hub import constants

    folder = Path(constants.HF_HUB_CACHE) / f"{repo_type}s--{repo_id.replace('/', '--')}"
    try:
        sha = (folder / "refs" / ref).read_text(encoding="utf-8").strip()
    except (OSError, ValueError):
        return None
    return sha if COMMIT.match(sha) else None


@functools.cache
def resolve_commit(repo_id: str, revision: str | None = None, repo_type: str = "model") -> tuple[str | None, str]:
    """(commit sha, how it was found) of `repo_id` at `revision` (default: the main branch), or (None, why
    it could not be resolved). A 40-hex revision is a commit already. Answers are remembered per process."""
    if revision and COMMIT.match(revision):
        return revision, "pinned"
    ref = revision or "main"
    why_not = hub_unreachable(
        ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE") if repo_type == "dataset" else ("HF_HUB_OFFLINE",)
    )
    if why_not is None:
        try:
            from huggingface_hub import HfApi

            info = HfApi().repo_info(repo_id, revision=ref, repo_type=repo_type, timeout=RESOLVE_TIMEOUT_S)
            if info.sha:
                return info.sha, "hub"
            why_not = "the hub named no commit"
        except Exception as e:  # noqa: BLE001 - any hub error: fall back to the local cache, say why
            why_not = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}".rstrip(": ")
    cached = _cached_ref(repo_id, repo_type, ref)
    if cached:
        return cached, "local cache"
    return None, f"{ref!r} is not in the local Hugging Face cache and the hub could not be asked: {why_not}"
