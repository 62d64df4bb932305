"""The `mechsteer` command line (typer + rich). Commands import torch only when they run a model."""
