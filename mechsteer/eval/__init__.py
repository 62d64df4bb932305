"""The `eval` measurement: benchmark accuracy of a steered model through lm-eval, and its building blocks.

The building blocks are pure Python (no torch), so the CLI and unit tests use them without a model: answer
grading (`grading`), the benchmarks' sources (`datasets`), prompt templates (`templates`), the offline `mini`
task (`mini_task`), lm-eval task definitions (`lm_eval_tasks`) and a time-limited helper process for the
grader (`helper_process`). The model-driven modules import torch: `lm_eval_bridge` (lm-eval's HFLM on the
already loaded, already steered model), `runner` (the measurement itself) and `vllm_backend` (`backend: vllm`).
"""
