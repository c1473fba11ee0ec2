"""Headline benchmark: IMDb sentiment vs length across GPT-2 sizes, algorithms and methods.

Stages (each cached under ``--cache-dir``): tokenizer, pre-trained policies, sentiment reward
model, the start evaluation, one PPO or GRPO run per size x method x seed (described by the RL
wing's typed records and trained through its services, :mod:`benchmarks.rlhf_imdb.runs`); then
a report (tables, CSVs, plots).
"""
