"""Inference backends other than hooked transformers (layer 3b: imports only models, vectors, spec, atomic,
errors; the engine and the evaluation layer import it). `bias_checkpoint` compiles all-position `add`
conditions into checkpoints that stock vLLM loads; `availability` checks, without torch, whether vLLM can run."""
