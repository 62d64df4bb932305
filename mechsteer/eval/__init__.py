"""Evaluation building blocks: answer grading, benchmark loading, prompt templates and the offline `mini` task.

These modules are pure Python (no torch import) so that they can be unit-tested and used by the CLI without
loading a model. Model-driven evaluation (generation, lm-eval wiring) lives elsewhere and builds on them.
"""
