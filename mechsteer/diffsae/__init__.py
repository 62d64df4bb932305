"""DiffSAE: sparse autoencoders on steering-induced activation differences dF = h(steered) - h(base), and the
features whose firing separates correct from incorrect generations (paper section 8; issue 13).

collect.py (generate + grade, teacher-forced capture, shards) -> train.py (TopK SAE, resumable) ->
features.py (frequencies, Fisher + BH, contexts, logit lens) -> run.py (`run_diffsae`). The SAE is stored in
SAELens' file format (sae.py)."""
