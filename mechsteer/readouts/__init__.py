"""Readouts: measurements on a steered model other than lm-eval benchmarks. Each returns per-sample records
and summary metrics for its cell. Comparisons across conditions are mostly the report's (it reads recorded
cells); a readout that needs another condition's forward pass on the same sequences computes it in its own cell
(`token_shift` against its `reference` condition, `diffsae` against the base model).

A kind's spec lives in `mechsteer.spec.kinds`; its runner is `<name>_kind.py` here (or `<name>.py` when one
module holds both the computation and the runner), and `<name>.py` holds the computation that tests check
against an independent one."""
