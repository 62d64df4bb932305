"""Model loading (hub, local directory, embedded GGUF) and architecture adapters."""
