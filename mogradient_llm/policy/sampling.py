"""The generation config of a rollout: sample exactly softmax(logits / temperature), the
distribution whose log-probabilities PPO scores, whatever the checkpoint's own
``generation_config.json`` says.

``generate`` fills every field it is not given from ``model.generation_config`` and then from
transformers' global defaults (``top_k=50``), so :func:`sampling_config` sets every
distribution-changing field to its neutral value and :func:`neutral_generation_config` hides the
model's own config while ``generate`` runs (fields whose neutral value is ``None``, such as
``min_p`` or ``suppress_tokens``, cannot be pinned any other way).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn
from transformers import GenerationConfig

if TYPE_CHECKING:
    from transformers import PreTrainedModel

#: Generation kwargs a user may set; every other ``generate`` option is refused.
ALLOWED_KWARGS = ("max_new_tokens", "do_sample", "temperature", "top_k", "top_p")

#: Every field of ``GenerationConfig`` that changes the sampled distribution, the number of
#: samples or where they stop, with its neutral value (``None``: the processor is not built).
NEUTRAL_FIELDS: dict[str, Any] = {
    "do_sample": True,
    "num_beams": 1,
    "num_beam_groups": 1,
    "num_return_sequences": 1,
    "top_k": 0,
    "top_p": 1.0,
    "typical_p": 1.0,
    "min_p": None,
    "top_h": None,
    "epsilon_cutoff": 0.0,
    "eta_cutoff": 0.0,
    "repetition_penalty": 1.0,
    "encoder_repetition_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "encoder_no_repeat_ngram_size": 0,
    "min_length": 0,
    "min_new_tokens": None,
    "bad_words_ids": None,
    "force_words_ids": None,
    "constraints": None,
    "sequence_bias": None,
    "suppress_tokens": None,
    "begin_suppress_tokens": None,
    "forced_bos_token_id": None,
    "forced_eos_token_id": None,
    "exponential_decay_length_penalty": None,
    "guidance_scale": None,
    "penalty_alpha": None,
    "dola_layers": None,
    "diversity_penalty": 0.0,
    "watermarking_config": None,
    "remove_invalid_values": False,
    "renormalize_logits": False,
    "stop_strings": None,
    "max_time": None,
    "prompt_lookup_num_tokens": None,
    "assistant_early_exit": None,
    "use_mtp": None,
    "output_scores": False,
    "output_logits": False,
    "return_dict_in_generate": False,
}

_WHY = (
    "it changes the sampled distribution away from softmax(logits / temperature), which is what "
    "PPO scores as the policy's log-probabilities, so the update would be computed for a "
    "different policy than the one that sampled"
)

#: Refused kwargs whose neutral value is accepted (and ignored), with how to fix the refusal.
_REFUSED: dict[str, tuple[Any, str]] = {
    "repetition_penalty": (1.0, "remove it (or set repetition_penalty=1.0)"),
    "typical_p": (1.0, "remove it (or set typical_p=1.0)"),
    "min_p": (None, "remove it"),
    "top_h": (None, "remove it"),
    "epsilon_cutoff": (0.0, "remove it"),
    "eta_cutoff": (0.0, "remove it"),
    "no_repeat_ngram_size": (0, "remove it"),
    "encoder_repetition_penalty": (1.0, "remove it"),
    "encoder_no_repeat_ngram_size": (0, "remove it"),
    "min_length": (0, "remove it; it forbids EOS early on, so short answers cannot be sampled"),
    "min_new_tokens": (0, "remove it; it forbids EOS early on, so short answers cannot be sampled"),
    "bad_words_ids": (None, "remove it; to keep words out, penalise them in a reward instead"),
    "suppress_tokens": (None, "remove it; to keep tokens out, penalise them in a reward instead"),
    "begin_suppress_tokens": (None, "remove it"),
    "sequence_bias": (None, "remove it; to favour sequences, reward them instead"),
    "forced_bos_token_id": (None, "remove it"),
    "forced_eos_token_id": (None, "remove it"),
    "exponential_decay_length_penalty": (None, "remove it; to shorten answers, use a reward"),
    "guidance_scale": (None, "remove it"),
    "num_beams": (1, "remove it: beam search is not a sample from the policy"),
    "num_return_sequences": (1, "remove it; the trainer samples one completion per prompt"),
}


def check_generation_kwargs(generation_kwargs: Mapping[str, Any], vocab_size: int) -> None:
    """Raise ``ValueError`` naming the first kwarg that would make ``generate`` sample from
    anything but softmax(logits / temperature) (or that is unknown), and how to fix it."""
    for key, value in generation_kwargs.items():
        if key in _REFUSED:
            neutral, fix = _REFUSED[key]
            if value is None or value == neutral:
                continue
            raise ValueError(f"generation kwarg {key}={value!r} is refused: {_WHY}; {fix}")
        if key not in ALLOWED_KWARGS:
            raise ValueError(
                f"unknown generation kwarg {key!r}: only {list(ALLOWED_KWARGS)} are accepted, "
                f"since other generate options may change the sampled distribution ({_WHY}); "
                "remove it (EOS and pad ids come from the tokenizer and the model's config)"
            )
    new_tokens = generation_kwargs.get("max_new_tokens")
    if isinstance(new_tokens, bool) or not isinstance(new_tokens, int) or new_tokens <= 0:
        raise ValueError(
            f"generation kwarg max_new_tokens must be a positive int, got {new_tokens!r}; set it"
        )
    if generation_kwargs.get("do_sample", True) is not True:
        raise ValueError(
            f"generation kwarg do_sample={generation_kwargs['do_sample']!r} is refused: greedy "
            f"decoding is not a sample and {_WHY}; set do_sample=True (lower temperature instead)"
        )
    temperature = generation_kwargs.get("temperature", 1.0)
    if (
        isinstance(temperature, bool)
        or not isinstance(temperature, (int, float))
        or not math.isfinite(temperature)
        or temperature <= 0
    ):
        raise ValueError(
            f"generation kwarg temperature={temperature!r} is refused: it must be a finite number "
            "> 0 (0 means greedy decoding, which is not a sample); set e.g. temperature=1.0"
        )
    top_k = generation_kwargs.get("top_k")
    if top_k is not None and top_k != 0 and not (isinstance(top_k, int) and top_k >= vocab_size):
        raise ValueError(
            f"generation kwarg top_k={top_k!r} is refused: {_WHY}; set top_k=0 (no truncation)"
        )
    top_p = generation_kwargs.get("top_p")
    if top_p is not None and top_p != 1.0:
        raise ValueError(
            f"generation kwarg top_p={top_p!r} is refused: {_WHY}; set top_p=1.0 (no truncation)"
        )


def eos_token_ids(model: nn.Module, tokenizer: Any) -> tuple[int, ...]:
    """Every EOS id the tokenizer, ``model.config`` and ``model.generation_config`` declare
    (in that order, without repeats): chat models such as Llama-3 end turns on several."""
    config = getattr(model, "config", None)
    sources = [
        getattr(tokenizer, "eos_token_id", None),
        getattr(config, "eos_token_id", None),
        getattr(getattr(model, "generation_config", None), "eos_token_id", None),
    ]
    ids: list[int] = []
    for source in sources:
        if isinstance(source, torch.Tensor):
            source = source.tolist()
        for token in source if isinstance(source, (list, tuple)) else [source]:
            if token is not None and int(token) not in ids:
                ids.append(int(token))
    if not ids:
        raise ValueError(
            "neither the tokenizer nor the model declares an EOS token, so responses would "
            "never end; set tokenizer.eos_token"
        )
    return tuple(ids)


def vocab_size(model: nn.Module) -> int:
    """The number of logits the model outputs per position."""
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "get_text_config"):
        config = config.get_text_config(decoder=True)
    size = getattr(config, "vocab_size", None)
    if size is None:
        # nn.Module types attributes as Tensor | Module: the model is a causal LM (or its peft
        # wrapper, which forwards the call).
        size = cast("PreTrainedModel", model).get_output_embeddings().weight.shape[0]
    return int(size)


def sampling_config(
    generation_kwargs: Mapping[str, Any], model: nn.Module, tokenizer: Any
) -> GenerationConfig:
    """The ``GenerationConfig`` that samples softmax(logits / temperature) for up to
    ``max_new_tokens`` tokens and stops at any of :func:`eos_token_ids` (a list in
    ``eos_token_id``); pass it to ``generate`` inside :func:`neutral_generation_config`.

    ``generation_kwargs`` are checked by :func:`check_generation_kwargs`; nothing is taken from
    the model's own ``generation_config`` but its EOS ids.
    """
    check_generation_kwargs(generation_kwargs, vocab_size(model))
    eos = list(eos_token_ids(model, tokenizer))
    pad = getattr(tokenizer, "pad_token_id", None)
    config = GenerationConfig(
        **NEUTRAL_FIELDS,
        max_new_tokens=int(generation_kwargs["max_new_tokens"]),
        temperature=float(generation_kwargs.get("temperature", 1.0)),
        eos_token_id=eos,
        pad_token_id=eos[0] if pad is None else int(pad),
        bos_token_id=getattr(getattr(model, "config", None), "bos_token_id", None),
        use_cache=True,
    )
    check_sampling_config(config)
    return config


def as_sampling_config(
    generation: GenerationConfig | Mapping[str, Any], model: nn.Module, tokenizer: Any
) -> GenerationConfig:
    """``generation`` if it is a checked :func:`sampling_config` result, else the config built
    from these generation kwargs."""
    if isinstance(generation, GenerationConfig):
        check_sampling_config(generation)
        return generation
    return sampling_config(generation, model, tokenizer)


def check_sampling_config(config: GenerationConfig) -> None:
    """Raise ``ValueError`` if ``config`` was not built by :func:`sampling_config` (a field that
    changes the distribution is not neutral, or the temperature or EOS ids are missing)."""
    wrong = {
        key: getattr(config, key, None)
        for key, neutral in NEUTRAL_FIELDS.items()
        if getattr(config, key, None) != neutral
    }
    if wrong:
        raise ValueError(
            f"generation config fields {wrong} are not neutral: {_WHY}; build the config with "
            "mogradient_llm.policy.sampling.sampling_config"
        )
    if not config.temperature or config.temperature <= 0 or not config.max_new_tokens:
        raise ValueError("the generation config needs temperature > 0 and max_new_tokens")
    if not isinstance(config.eos_token_id, list) or not config.eos_token_id:
        raise ValueError("the generation config needs its EOS ids as a list (sampling_config)")


@contextlib.contextmanager
def neutral_generation_config(model: nn.Module) -> Iterator[None]:
    """Within the block, every module of ``model`` that carries a ``generation_config`` (the
    transformers model, also under a peft wrapper) carries an empty one, so ``generate`` fills
    nothing from the checkpoint's; the originals are restored on exit, even on error."""
    saved = [
        (module, module.__dict__["generation_config"])
        for module in model.modules()
        if module.__dict__.get("generation_config") is not None
    ]
    try:
        for module, _ in saved:
            module.__dict__["generation_config"] = GenerationConfig()
        yield
    finally:
        for module, original in saved:
            module.__dict__["generation_config"] = original
