"""Compile a study into content-hashed cells, execute the ones not cached, record them atomically."""
