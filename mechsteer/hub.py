"""Is the Hugging Face hub reachable? Asked once per process, so that a run without network fails at once.

Without this, a hub model or dataset that cannot be downloaded is only reported after huggingface_hub's
retries (about 52 s for a paper-profile run). `hub_unreachable()` answers from the environment
(`HF_HUB_OFFLINE` and friends) or from one TCP connection to the hub's host (`HF_ENDPOINT`, default
huggingface.co:443; the HTTPS proxy instead when one is configured) with a 2 s timeout, and remembers the
answer for the rest of the process. Callers then load from the local cache only, or raise their clear error
(which model or dataset, and the fix: a local directory / --data-dir) straight away.
"""

from __future__ import annotations

import functools
import os
import socket
import urllib.parse
import urllib.request

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
    """Probe again on the next call (tests; a long-lived process whose network came back)."""
    _network_problem.cache_clear()
