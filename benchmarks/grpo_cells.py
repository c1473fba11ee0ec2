"""The cells of the GRPO step benchmark (:mod:`benchmarks.grpo_step`): the shared tiny policy,
prompts and TRL-style reward functions, and one stepper per cell — TRL 1.16's ``GRPOTrainer``
held after each step (:class:`TRLCell`) or our ``MOTrainer`` (:class:`OurCell`). The device
check builds its GPU cells from the same pieces."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: cell -> (aggregator, extra config fields) for our side; a cell named ``ppo-*`` runs PPO
#: (one value head per objective) instead of GRPO. ``upgrad`` and ``ppo-linear`` are cells of
#: the device check (``benchmarks.device_check``), not of this table.
OURS: dict[str, tuple[str, dict[str, Any]]] = {
    "linear": ("linear", {"reward_weights": [1.0, 0.5]}),
    "single": ("linear", {}),
    "pama": ("pama", {}),
    "mgda": ("mgda", {"gramian_level": "features"}),
    "upgrad": ("upgrad", {"gramian_level": "parameters", "parameter_gramian": "layers"}),
    "ppo-linear": ("linear", {"reward_weights": [1.0, 0.5], "num_ppo_epochs": 1}),
}
REWARD_WEIGHTS = (1.0, 0.5)
#: The policy's EOS logit is -EOS_LOGIT whatever the input (see :func:`build_policy`).
EOS_LOGIT = 100.0
LOSS_TYPE = "dapo"
#: Short prompts used when no ``--data-dir`` is given.
DEFAULT_PROMPTS = (
    "The movie was",
    "I thought the acting",
    "This film is",
    "The plot of this story",
    "Honestly, the ending",
    "My favourite scene",
    "The director clearly",
    "What a",
)


# ----- rewards, written the way TRL expects them ---------------------------------------------


#: Token counts of the completions scored in this process (both trainers pass
#: ``completion_ids``); a cell checks them against ``--completion-length``.
COMPLETION_TOKENS: list[int] = []


def length_reward(
    completions: Sequence[str], completion_ids: Sequence[Sequence[int]] | None = None, **kwargs: Any
) -> list[float]:
    """Words in the completion over 20, capped at 1: rewards longer answers."""
    if completion_ids is not None:
        COMPLETION_TOKENS.extend(len(ids) for ids in completion_ids)
    return [min(len(text.split()) / 20.0, 1.0) for text in completions]


@functools.lru_cache(maxsize=1)
def _vader() -> Any:
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def sentiment_reward(completions: Sequence[str], **kwargs: Any) -> list[float]:
    """VADER compound score of the completion, in [-1, 1]: rewards positive text."""
    analyzer = _vader()
    return [float(analyzer.polarity_scores(text)["compound"]) for text in completions]


def vowel_reward(completions: Sequence[str], **kwargs: Any) -> list[float]:
    """The share of vowels among the completion's letters, in [0, 1]: a second reward that
    needs no library (for machines without ``vaderSentiment``)."""
    out = []
    for text in completions:
        letters = [c for c in text.lower() if c.isalpha()]
        out.append(sum(c in "aeiou" for c in letters) / max(len(letters), 1))
    return out


#: ``settings["second_reward"]`` -> the second reward function (the first is the length).
SECOND_REWARDS = {"sentiment": sentiment_reward, "vowels": vowel_reward}


def reward_functions(settings: dict[str, Any]) -> list[Any]:
    """The two reward functions of a run: the length and ``settings["second_reward"]``."""
    return [length_reward, SECOND_REWARDS[settings.get("second_reward", "sentiment")]]


def weighted_reward(completions: Sequence[str], **kwargs: Any) -> list[float]:
    """The two rewards summed with ``REWARD_WEIGHTS``, as one reward (single-objective GRPO)."""
    a, b = REWARD_WEIGHTS
    lengths = length_reward(completions, **kwargs)
    sentiments = sentiment_reward(completions)
    return [a * x + b * y for x, y in zip(lengths, sentiments)]


# ----- the shared setup ----------------------------------------------------------------------


def build_policy(
    path: Path,
    n_layer: int,
    n_embd: int,
    vocab_size: int,
    *,
    n_head: int = 4,
    n_positions: int = 128,
    model_vocab: int | None = None,
) -> Path:
    """Save a randomly initialised GPT-2 whose EOS is never sampled, and its tokenizer, to
    ``path`` (both sides load it).

    Our trainer refuses ``min_new_tokens`` (it changes the sampled distribution), so equal
    completion lengths come from the policy instead: the EOS logit is pinned at ``-EOS_LOGIT``
    for every input. The head is tied to the embeddings, so the EOS row is set to
    ``EOS_LOGIT`` on one coordinate and 0 elsewhere, and the final layer norm outputs -1 on that
    coordinate (gain 0, bias -1); the other tokens' logits only gain a fixed offset each.
    ``model_vocab``: the embedding padded to that many rows (GPT-2's 50257 for its 124M shape)
    beyond the tokenizer's, each a copy of the EOS row, so that none is ever sampled either.
    """
    import torch

    from mogradient_llm.policy.models import build_tiny_policy

    model, tokenizer = build_tiny_policy(
        pretrain_steps=0,
        vocab_size=vocab_size,
        n_layer=n_layer,
        n_embd=n_embd,
        n_head=n_head,
        n_positions=n_positions,
    )
    if model_vocab is not None and model_vocab > len(tokenizer):
        model.resize_token_embeddings(model_vocab)
    with torch.no_grad():
        embedding = model.get_input_embeddings().weight
        embedding[tokenizer.eos_token_id] = 0.0
        embedding[tokenizer.eos_token_id, 0] = EOS_LOGIT
        embedding[len(tokenizer) :] = embedding[tokenizer.eos_token_id]
        model.transformer.ln_f.weight[0] = 0.0
        model.transformer.ln_f.bias[0] = -1.0
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def load_prompts(data_dir: str | None, policy: Path, n: int) -> list[str]:
    """``n`` prompts: the first 2-8 tokens of IMDb reviews from ``data_dir`` (its
    ``train.jsonl.gz`` or ``train.jsonl``), or the built-in short prompts repeated."""
    if data_dir is None:
        return [DEFAULT_PROMPTS[i % len(DEFAULT_PROMPTS)] for i in range(n)]
    from transformers import AutoTokenizer

    from mogradient_llm.inputs.prompts import load_prompts as load

    tokenizer = AutoTokenizer.from_pretrained(policy)
    prompts = load(data_dir, tokenizer, split="train", limit=4 * n)[:n]
    if len(prompts) < n:
        raise ValueError(
            f"{data_dir} gave {len(prompts)} prompts, {n} are needed: point --data-dir at a "
            "directory with a train.jsonl(.gz) of reviews longer than 200 characters"
        )
    return prompts


def generation_kwargs(length: int) -> dict[str, Any]:
    """Sample ``length`` new tokens from softmax(logits) (the same kwargs on both sides)."""
    return {
        "max_new_tokens": length,
        "do_sample": True,
        "top_k": 0,
        "top_p": 1.0,
        "temperature": 1.0,
    }


# ----- the cells: one step at a time ---------------------------------------------------------


def _synchronize() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


class TRLCell:
    """TRL's ``GRPOTrainer.train()`` in a thread that pauses after every step, so that its
    steps can be interleaved with ours one by one; :meth:`step` runs one and returns its seconds
    (from ``on_step_begin`` to ``on_step_end``: generation, scoring and the update)."""

    def __init__(self, settings: dict[str, Any]):
        import torch
        from datasets import Dataset
        from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
        from transformers.trainer_callback import PrinterCallback
        from trl import GRPOConfig, GRPOTrainer

        self.max_steps = settings["warmup"] + settings["steps"]
        self.times: list[float] = []
        self.start = 0.0
        self.go = threading.Event()
        self.done = threading.Event()
        self.closing = False
        self.error: BaseException | None = None
        cell = self

        class PauseAfterStep(TrainerCallback):  # type: ignore[misc]
            """Times each step, then holds the training thread until the next step is asked."""

            def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                cell.start = time.perf_counter()

            def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                _synchronize()
                cell.times.append(time.perf_counter() - cell.start)
                cell.done.set()
                cell.go.wait()
                cell.go.clear()
                if cell.closing:  # closed before its last step (a time budget ran out)
                    control.should_training_stop = True

        generation = generation_kwargs(settings["completion_length"])
        config = GRPOConfig(
            output_dir=settings["tmp"],
            per_device_train_batch_size=settings["batch_size"],
            gradient_accumulation_steps=1,
            num_generations=settings["num_generations"],
            num_iterations=1,
            max_completion_length=generation["max_new_tokens"],
            temperature=generation["temperature"],
            top_k=generation["top_k"],
            top_p=generation["top_p"],
            learning_rate=1e-5,
            beta=0.0,
            epsilon=0.2,
            loss_type=LOSS_TYPE,
            scale_rewards="group",
            reward_weights=list(REWARD_WEIGHTS),
            max_steps=self.max_steps,
            logging_steps=self.max_steps,
            save_strategy="no",
            report_to="none",
            use_cpu=not torch.cuda.is_available(),
            bf16=settings.get("bf16", False),
            gradient_checkpointing=False,
            disable_dropout=True,
            disable_tqdm=True,
            seed=0,
        )
        # TRL types reward functions as returning list[float | None]; ours return list[float].
        reward_funcs: list[Any] = reward_functions(settings)
        self.trainer = GRPOTrainer(
            model=AutoModelForCausalLM.from_pretrained(settings["policy"]),
            processing_class=AutoTokenizer.from_pretrained(settings["policy"]),
            reward_funcs=reward_funcs,
            args=config,
            train_dataset=Dataset.from_dict({"prompt": settings["prompts"]}),
            callbacks=[PauseAfterStep()],
        )
        self.trainer.remove_callback(PrinterCallback)  # it prints every log dict to stdout
        self.thread = threading.Thread(target=self._train, daemon=True)

    def _train(self) -> None:
        try:
            self.trainer.train()
        except BaseException as error:  # noqa: BLE001 - re-raised in the main thread by step()
            self.error = error
        finally:
            self.done.set()

    def step(self) -> float:
        if len(self.times) >= self.max_steps:
            raise RuntimeError(f"TRL's trainer was built for {self.max_steps} steps; no more")
        if self.thread.ident is None:
            self.thread.start()
        else:
            self.go.set()
        self.done.wait()
        self.done.clear()
        if self.error is not None:
            raise RuntimeError("TRL's GRPOTrainer failed") from self.error
        return self.times[-1]

    def close(self) -> None:
        """Let ``train()`` finish (logging after the last step, or stopping early when fewer
        steps were asked for) and end its thread."""
        if self.thread.is_alive():
            self.closing = True
            self.go.set()
            self.thread.join()


class OurCell:
    """Our ``MOTrainer`` with the cell's aggregator; :meth:`step` runs one ``trainer.step()``
    (generation, scoring and the update) and returns its seconds. ``settings["bf16"]``: under
    accelerate's bf16 autocast (float32 weights), as TRL's ``bf16=True``."""

    def __init__(self, cell: str, settings: dict[str, Any]):
        from accelerate import Accelerator
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from mogradient_llm import MOGRPOConfig, MOPPOConfig, MOTrainer

        aggregator, extra = OURS[cell]
        common = {
            "learning_rate": 1e-5,
            "batch_size": settings["batch_size"],
            "mini_batch_size": settings["batch_size"],
            "aggregator": aggregator,
            "noon": False,
            "seed": 0,
            "generation_kwargs": generation_kwargs(settings["completion_length"]),
        }
        config: Any
        if cell.startswith("ppo"):
            config = MOPPOConfig(**common, **extra)
        else:
            config = MOGRPOConfig(
                **common,
                num_generations=settings["num_generations"],
                num_iterations=1,
                beta=0.0,
                epsilon=0.2,
                loss_type=LOSS_TYPE,
                scale_rewards="group",
                **extra,
            )
        rewards = [weighted_reward] if cell == "single" else reward_functions(settings)
        precision = "bf16" if settings.get("bf16") else "no"
        self.trainer = MOTrainer(
            config,
            AutoModelForCausalLM.from_pretrained(settings["policy"]),
            AutoTokenizer.from_pretrained(settings["policy"]),
            rewards=rewards,
            prompts=settings["prompts"],
            accelerator=Accelerator(mixed_precision=precision, cpu=not cuda_available()),
        )

    def step(self) -> float:
        start = time.perf_counter()
        stats = self.trainer.step()
        _synchronize()
        seconds = time.perf_counter() - start
        if stats.get("train/skipped"):
            raise RuntimeError(f"our trainer skipped a step (non-finite values): {stats}")
        return seconds

    def close(self) -> None:
        """Nothing to release."""


Cell = TRLCell | OurCell


def make_cell(cell: str, settings: dict[str, Any]) -> Cell:
    return TRLCell(settings) if cell == "trl" else OurCell(cell, settings)


def check_lengths(length: int) -> None:
    """Raise unless every completion scored so far in this process had ``length`` tokens."""
    lengths = set(COMPLETION_TOKENS)
    if lengths != {length}:
        raise RuntimeError(
            f"completions of {sorted(lengths)} tokens were scored, not all {length}: the cells "
            "did unequal generation work, so their timings are not comparable (did the policy "
            "sample EOS? see build_policy)"
        )


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()
