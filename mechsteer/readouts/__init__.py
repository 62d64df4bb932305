"""Readouts: measurements on a steered model other than lm-eval benchmarks. Each returns per-sample records
and summary metrics; cross-condition comparisons are computed by the report."""
