"""Rollouts sample exactly what PPO scores: softmax(logits / temperature) with the trainer's
settings, whatever the checkpoint's ``generation_config.json`` says; responses end at any EOS id
the model declares; response log-probs are computed one fp32 row at a time."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from mogradient_llm.policy.rollout import (
    generate_rollout,
    lm_response_logprobs,
    response_logprobs,
    response_mask,
)
from mogradient_llm.policy.sampling import eos_token_ids, neutral_generation_config, sampling_config
from tests.bounds import U32, U_BF16, log_softmax_bounds
from tests.llm_fixtures import load_tiny_lm, tiny_prompts, untied_lm_dir

torch.set_num_threads(1)

DEFAULT = {"max_new_tokens": 8, "do_sample": True, "top_k": 0, "top_p": 1.0}


def _reload(model: Any, path: Path) -> Any:
    """``model`` saved and loaded back, so its generation config ships as a json file."""
    from transformers import AutoModelForCausalLM

    model.save_pretrained(path)
    assert (path / "generation_config.json").exists()
    return AutoModelForCausalLM.from_pretrained(path)


def _assert_scored_as_sampled(model: Any, tokenizer: Any, kwargs: dict[str, Any]) -> None:
    """The log-probs of the scores ``generate`` sampled from equal ``lm_response_logprobs``."""
    tokenizer.padding_side = "left"
    torch.manual_seed(0)
    rollout = generate_rollout(model, tokenizer, tiny_prompts(tokenizer, 6), kwargs, "cpu")
    config = copy.deepcopy(sampling_config(kwargs, model, tokenizer))
    config.output_scores = config.return_dict_in_generate = True
    torch.manual_seed(0)  # the same draw again, now with the processed scores
    with neutral_generation_config(model):
        out = model.eval().generate(
            input_ids=rollout.query_ids, attention_mask=rollout.query_mask, generation_config=config
        )
    q = rollout.query_ids.shape[1]
    assert torch.equal(out.sequences[:, q:], rollout.response_ids)
    sampled = torch.stack(out.scores, 1).log_softmax(-1)
    sampled = sampled.gather(-1, rollout.response_ids.unsqueeze(-1)).squeeze(-1)
    scored = lm_response_logprobs(model, rollout, config.temperature)
    mask = rollout.response_mask.bool()
    assert mask.sum() > len(mask)  # more than one token per row is compared
    torch.testing.assert_close(scored[mask], sampled[mask], rtol=0, atol=1e-5)


def test_checkpoint_generation_config_is_ignored(tmp_path: Path) -> None:
    model, tokenizer = load_tiny_lm()
    model.generation_config.do_sample = True
    model.generation_config.temperature = 0.6
    model.generation_config.repetition_penalty = 1.3
    model = _reload(model, tmp_path)
    assert model.generation_config.repetition_penalty == 1.3
    _assert_scored_as_sampled(model, tokenizer, DEFAULT)
    assert model.generation_config.temperature == 0.6  # restored after generate


def test_lora_wrapped_policy_samples_what_it_scores() -> None:
    """Under peft the transformers model inside the wrapper carries the generation config."""
    peft = pytest.importorskip("peft")
    model, tokenizer = load_tiny_lm()
    own = model.generation_config
    own.do_sample, own.temperature, own.suppress_tokens = True, 0.6, [5, 6, 7]
    lora = peft.LoraConfig(r=2, target_modules=["c_attn"], task_type="CAUSAL_LM")
    policy = peft.get_peft_model(model, lora)
    _assert_scored_as_sampled(policy, tokenizer, DEFAULT)
    assert model.generation_config is own and policy.generation_config is own


def test_llama_untied_head_samples_what_it_scores(tmp_path: Path) -> None:
    model, tokenizer = load_tiny_lm(untied_lm_dir())
    assert model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr()
    # Fields whose neutral value is None (min_p, suppress_tokens) are filled from here unless
    # the model's config is hidden during generate.
    gen = model.generation_config
    gen.do_sample, gen.temperature, gen.top_k, gen.min_p = True, 0.6, 5, 0.2
    gen.repetition_penalty, gen.suppress_tokens = 1.3, [5, 6, 7]
    model = _reload(model, tmp_path)
    _assert_scored_as_sampled(model, tokenizer, {**DEFAULT, "temperature": 0.7})


def test_no_logits_processor_comes_from_the_checkpoint() -> None:
    """Inside ``generate``, the merged config builds only the temperature warper."""
    from transformers.generation.logits_process import TemperatureLogitsWarper

    model, tokenizer = load_tiny_lm()
    gen = model.generation_config
    gen.do_sample, gen.temperature, gen.top_k, gen.top_p, gen.min_p = True, 0.6, 5, 0.9, 0.1
    gen.typical_p, gen.epsilon_cutoff, gen.eta_cutoff = 0.9, 0.01, 0.01
    gen.repetition_penalty, gen.no_repeat_ngram_size, gen.min_new_tokens = 1.3, 2, 3
    gen.bad_words_ids, gen.suppress_tokens, gen.begin_suppress_tokens = [[5]], [6], [7]
    gen.sequence_bias, gen.forced_bos_token_id, gen.forced_eos_token_id = {(8,): 2.0}, 9, 10
    gen.exponential_decay_length_penalty, gen.renormalize_logits = (2, 1.5), True
    config = sampling_config({**DEFAULT, "temperature": 0.7}, model, tokenizer)
    with neutral_generation_config(model):
        merged, _ = model._prepare_generation_config(config)
    merged._eos_token_tensor = torch.tensor(merged.eos_token_id)
    processors = model._get_logits_processor(merged, input_ids_seq_length=4, device="cpu")
    assert [type(p) for p in processors] == [TemperatureLogitsWarper]
    assert processors[0].temperature == 0.7
    assert model.generation_config is gen


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("repetition_penalty", 1.3),
        ("top_k", 5),
        ("top_p", 0.9),
        ("min_p", 0.1),
        ("typical_p", 0.9),
        ("bad_words_ids", [[5]]),
        ("min_new_tokens", 2),
        ("min_length", 3),
        ("no_repeat_ngram_size", 2),
        ("suppress_tokens", [5]),
        ("sequence_bias", {(5,): -1.0}),
        ("do_sample", False),
        ("num_beams", 2),
        ("temperature", 0.0),
        ("temperature", -1.0),
        ("max_time", 10.0),
        ("eos_token_id", 5),
        ("max_new_tokens", 0),
    ],
)
def test_distribution_changing_kwargs_are_refused(key: str, value: Any) -> None:
    model, tokenizer = load_tiny_lm()
    tokenizer.padding_side = "left"
    with pytest.raises(ValueError, match=re.escape(key)):
        generate_rollout(model, tokenizer, ["a good film"], {**DEFAULT, key: value}, "cpu")


def test_neutral_kwargs_are_accepted() -> None:
    model, tokenizer = load_tiny_lm()
    vocab = model.config.vocab_size
    for kwargs in (
        {"max_new_tokens": 4},
        {**DEFAULT, "top_k": None, "top_p": None, "temperature": 0.5},
        {**DEFAULT, "top_k": vocab, "repetition_penalty": 1.0, "num_beams": 1},
    ):
        config = sampling_config(kwargs, model, tokenizer)
        assert (config.top_k, config.top_p, config.do_sample) == (0, 1.0, True)
    assert config.temperature == 1.0


def _with_eos_ids(model: Any, config_ids: list[int], generation_ids: list[int]) -> Any:
    model.config.eos_token_id = config_ids
    model.generation_config.eos_token_id = generation_ids
    return model


def test_eos_ids_are_the_union_of_tokenizer_config_and_generation_config() -> None:
    model, tokenizer = load_tiny_lm()
    eos = tokenizer.eos_token_id
    _with_eos_ids(model, [eos, 11], [11, 12])
    assert eos_token_ids(model, tokenizer) == (eos, 11, 12)
    assert sampling_config(DEFAULT, model, tokenizer).eos_token_id == [eos, 11, 12]


def test_response_mask_stops_at_the_first_of_any_eos() -> None:
    response = torch.tensor([[5, 9, 11, 7, 0], [5, 11, 0, 7, 8], [5, 6, 7, 8, 9], [0, 11, 5, 6, 7]])
    expected = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    assert torch.equal(response_mask(response, (0, 11)), expected)


def test_generation_stops_at_an_eos_only_the_model_declares(tmp_path: Path) -> None:
    model, tokenizer = load_tiny_lm()
    stop = 11  # an ordinary token the checkpoint declares as an extra EOS
    assert stop != tokenizer.eos_token_id and stop not in tokenizer.all_special_ids
    with torch.no_grad():  # every position's logits: `stop` ahead of all others by ~100
        direction = torch.zeros(model.config.n_embd)
        direction[0] = 10.0
        model.transformer.wte.weight[stop] = direction  # tied: the head row of `stop`
        model.transformer.ln_f.weight.zero_()
        model.transformer.ln_f.bias.copy_(direction)
    eos = tokenizer.eos_token_id
    model = _reload(_with_eos_ids(model, [eos, stop], [eos, stop]), tmp_path)
    tokenizer.padding_side = "left"
    torch.manual_seed(0)
    rollout = generate_rollout(model, tokenizer, tiny_prompts(tokenizer, 4), DEFAULT, "cpu")
    assert stop in rollout.eos_token_ids
    assert rollout.response_ids.tolist() == [[stop]] * 4  # generate stopped at once
    assert rollout.response_mask.tolist() == [[1]] * 4
    assert rollout.completions == [""] * 4  # the text ends before the EOS


class _LargestFloat32(TorchDispatchMode):
    """Records the largest float32 tensor any op creates."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for leaf in tree_leaves(out):
            if isinstance(leaf, torch.Tensor) and leaf.dtype == torch.float32:
                self.largest = max(self.largest, leaf.numel())
        return out


def _reference(logits: torch.Tensor, ids: torch.Tensor, q: int, temperature: float) -> torch.Tensor:
    scaled = logits[:, q - 1 : -1].float() / temperature
    return torch.log_softmax(scaled, -1).gather(-1, ids[:, q:].unsqueeze(-1)).squeeze(-1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_response_logprobs_equal_log_softmax(dtype: torch.dtype, temperature: float) -> None:
    gen = torch.Generator().manual_seed(0)
    logits = (3 * torch.randn(3, 9, 50, generator=gen)).to(dtype).requires_grad_()
    ids = torch.randint(50, (3, 9), generator=gen)
    """Both are x_t − logsumexp(x) of the same float32 x = logits / T (the same division, on
    the same float32 copy of bf16 logits): within log_softmax_bounds of each other, and so are
    their gradients (÷T, and rounded to the logits' dtype, half an ulp of each)."""
    got = response_logprobs(logits, ids, 4, temperature)
    expected = _reference(logits, ids, 4, temperature)
    assert got.shape == (3, 5) and got.dtype == torch.float32
    scaled = logits.detach()[:, 3:-1].float() / temperature
    value_bound, grad_bound = log_softmax_bounds(scaled, ids[:, 4:])
    assert bool(((got - expected).abs() <= value_bound).all())
    (grad,) = torch.autograd.grad(got.sum(), logits)
    (expected_grad,) = torch.autograd.grad(expected.sum(), logits)
    u = U_BF16 if dtype == torch.bfloat16 else U32
    ours, theirs = grad[:, 3:-1].double(), expected_grad[:, 3:-1].double()
    bound = grad_bound / temperature * (1 + 2 * U32) + u * (ours.abs() + theirs.abs())
    err = (ours - theirs).abs()
    assert bool((err <= bound).all()), float((err / bound).max())
    assert not grad[:, :3].any() and not grad[:, -1].any()  # only the response's logits


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_response_logprobs_one_fp32_row_at_a_time_whatever_the_dtype(temperature: float) -> None:
    batch, length, vocab, q = 4, 9, 64, 3
    gen = torch.Generator().manual_seed(1)
    logits = (3 * torch.randn(batch, length, vocab, generator=gen)).bfloat16()
    ids = torch.randint(vocab, (batch, length), generator=gen)
    with torch.no_grad(), _LargestFloat32() as probe:
        from_bf16 = response_logprobs(logits, ids, q, temperature)
    assert probe.largest <= (length - q) * vocab  # never a [batch, T, vocab] fp32 copy
    from_fp32 = response_logprobs(logits.float(), ids, q, temperature)
    assert torch.equal(from_bf16, from_fp32)  # bit-identical: the same path for both dtypes
