"""Where the engine gets vector sets from: `BuildContext`, which calls each vector kind's builder. It lives with
the builders (`mechsteer.builders.context`, the layer of what it calls); this module re-exports it for code
that imports it from the engine."""

from __future__ import annotations

from mechsteer.builders.context import BuildContext, subset

__all__ = ["BuildContext", "subset"]
