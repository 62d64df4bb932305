"""Steering-vector sets: an `[n_layers, d_model]` stack with the indices of the rows that exist, stored as
safetensors with metadata. Never pickle: user files are read with safetensors only."""

from mechsteer.vectors.vector_set import VectorSet, load_vector_set, save_vector_set

__all__ = ["VectorSet", "load_vector_set", "save_vector_set"]
