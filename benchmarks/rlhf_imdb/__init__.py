"""Headline benchmark: IMDb sentiment vs length across GPT-2 sizes and aggregators.

Stages (each cached under ``--cache-dir``): tokenizer, pre-trained policies, sentiment reward
model, one PPO run per size x aggregator x seed; then a report (table, CSVs, plots).
"""
