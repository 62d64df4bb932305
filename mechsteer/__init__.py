"""mechsteer: declarative mechanistic steering studies.

A study is one YAML file (models x steering vectors x conditions x evaluations/readouts x seeds).
`mechsteer run study.yaml` validates it, compiles it into content-hashed cells, executes the cells that are
not cached yet inside hook scopes that always clean up, and writes records, tables and plots.

The public surface is small on purpose; heavy modules (torch, transformers, lm-eval) are imported lazily
so that `mechsteer validate` and `--help` start fast.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
