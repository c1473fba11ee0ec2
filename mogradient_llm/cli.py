"""``mogradient-llm``: ``train``, ``evaluate`` and ``demo`` commands."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from mogradient_llm.config import GRAMIAN_LEVELS, KL_ESTIMATORS, PARAMETER_GRAMIANS, MOPPOConfig

TINY = "tiny"


def _float_list(text: str) -> list[float]:
    return [float(x) for x in text.split(",")]


def _add_data_args(parser: argparse.ArgumentParser, split: str) -> None:
    group = parser.add_argument_group("prompts")
    group.add_argument(
        "--dataset",
        help="hub dataset name, or a local .jsonl/.csv(.gz) file or directory with "
        "{split}.jsonl.gz (e.g. ../shared/data/imdb); default: generated reviews",
    )
    group.add_argument("--split", default=split)
    group.add_argument("--text-field", default="text")
    group.add_argument("--max-prompts", type=int, default=None, help="use the first N texts")
    group.add_argument("--prompt-min-tokens", type=int, default=2)
    group.add_argument("--prompt-max-tokens", type=int, default=8)


def _add_generation_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--temperature", type=float, default=1.0)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``mogradient-llm``."""
    parser = argparse.ArgumentParser(
        prog="mogradient-llm", description="Multi-objective RLHF (PPO) with mogradient"
    )
    parser.add_argument(
        "--threads",
        type=int,
        help="torch CPU threads (torch.set_num_threads); default: torch's own, 1 for demo "
        "(tiny models run fastest on one thread, above all on a busy machine)",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a policy with multi-objective PPO")
    train.add_argument("--policy", default=TINY, help="model name or path, or 'tiny' (offline)")
    train.add_argument("--ref-policy", help="KL reference (default: a frozen copy of --policy)")
    train.add_argument(
        "--reward",
        action="append",
        required=True,
        help="length[:chars|words|tokens], vader, classifier:PATH[@LABEL]; repeat per objective",
    )
    train.add_argument("--aggregator", default="pama")
    train.add_argument(
        "--aggregator-kwargs",
        type=json.loads,
        default={},
        help="the aggregator's hyper-parameters as a JSON object, e.g. "
        '\'{"granularity": "batch"}\' for PAMA or \'{"preference": [0.7, 0.3]}\'',
    )
    train.add_argument("--gramian-level", choices=GRAMIAN_LEVELS, default="parameters")
    train.add_argument(
        "--parameter-gramian",
        choices=PARAMETER_GRAMIANS,
        default="layers",
        help="parameters level: layer by layer without the k x d Jacobian, or the Jacobian",
    )
    train.add_argument("--no-noon", action="store_true", help="do not clip advantages at 0")
    train.add_argument(
        "--no-normalize-weights",
        action="store_true",
        help="keep each aggregator's own weight scale instead of rescaling to sum 1",
    )
    train.add_argument("--steps", type=int, default=100)
    train.add_argument("--output-dir", required=True)
    train.add_argument("--save-steps", type=int, default=0, help="checkpoint every N steps")
    train.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=None,
        help="continue from the newest complete checkpoint of --output-dir (or of the given "
        "checkpoint/run directory) up to --steps in total",
    )
    train.add_argument(
        "--skip-nonfinite",
        action="store_true",
        help="skip (with a warning) steps whose rewards, advantages or losses are NaN/inf "
        "instead of stopping",
    )
    lora = train.add_argument_group("LoRA (peft)")
    lora.add_argument("--lora-r", type=int, default=0, help="LoRA rank; 0 trains the full model")
    lora.add_argument("--lora-alpha", type=float, default=16.0)
    lora.add_argument("--lora-dropout", type=float, default=0.0)
    lora.add_argument(
        "--lora-target-modules",
        type=lambda text: text.split(","),
        help="comma-separated module names (e.g. c_attn); default: peft's for the model",
    )
    train.add_argument("--config", help="JSON file of MOPPOConfig fields (flags override it)")
    train.add_argument("--batch-size", type=int, default=16)
    train.add_argument("--mini-batch-size", type=int, default=8)
    train.add_argument("--ppo-epochs", type=int, default=4)
    train.add_argument(
        "--gradient-accumulation-steps",
        type=int,
        default=1,
        help="micro-batches per minibatch, accumulated into one update",
    )
    train.add_argument("--learning-rate", type=float, default=1e-4)
    train.add_argument("--kl-coef", type=float, default=0.2)
    train.add_argument("--kl-estimator", choices=KL_ESTIMATORS, default="k1")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--tiny-pretrain-steps", type=int, default=200)
    train.add_argument("--no-progress", action="store_true")
    train.add_argument(
        "--cpu",
        action="store_true",
        help="run on CPU even where a GPU is present; several CPU processes (gloo) need it: "
        "torchrun --nproc_per_node 2 -m mogradient_llm train --cpu ...",
    )
    _add_generation_args(train)
    _add_data_args(train, "train")

    evaluate = sub.add_parser(
        "evaluate", help="mean rewards, hypervolume and KL on held-out prompts"
    )
    evaluate.add_argument("--checkpoint", help="a checkpoint directory written by train")
    evaluate.add_argument("--policy", help="model name or path (default: CHECKPOINT/policy)")
    evaluate.add_argument("--ref-policy", help="KL reference (default: the one train used)")
    evaluate.add_argument("--reward", action="append", help="default: the rewards train used")
    evaluate.add_argument(
        "--ref-point",
        type=_float_list,
        help="hypervolume reference point, comma-separated (default: each reward's worst "
        "value: length low bound, vader -1)",
    )
    evaluate.add_argument("--num-prompts", type=int, default=64)
    evaluate.add_argument("--batch-size", type=int, default=32)
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--output", help="write the results as JSON here")
    _add_generation_args(evaluate)
    _add_data_args(evaluate, "test")

    demo = sub.add_parser("demo", help="offline demo: tiny GPT-2, PAMA on vader + length")
    demo.add_argument("--data-dir", help="IMDb subset directory (default: ../shared/data/imdb)")
    demo.add_argument("--output-dir", default="outputs/demo")
    demo.add_argument("--minutes", type=float, default=3.0, help="PPO training time budget")
    demo.add_argument("--pretrain-steps", type=int, default=400)
    demo.add_argument("--aggregator", default="pama")
    demo.add_argument("--seed", type=int, default=0)
    return parser


def _prompts(args: argparse.Namespace, tokenizer: Any, limit: int | None, seed: int) -> list[str]:
    from mogradient_llm.data import imdb_prompts, load_prompts
    from mogradient_llm.models import synthetic_reviews

    if args.dataset:
        return load_prompts(
            args.dataset,
            tokenizer,
            args.split,
            args.text_field,
            limit,
            args.prompt_min_tokens,
            args.prompt_max_tokens,
            seed=seed,
        )
    texts = synthetic_reviews(limit or 1000, seed=seed + (1 if args.split == "test" else 0))
    return imdb_prompts(
        texts, tokenizer, args.prompt_min_tokens, args.prompt_max_tokens, min_chars=0, seed=seed
    )


def _generation_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "max_new_tokens": args.max_new_tokens,
        "do_sample": True,
        "top_k": 0,
        "top_p": 1.0,
        "temperature": args.temperature,
    }


def _load_lm(name_or_path: str) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(name_or_path), AutoTokenizer.from_pretrained(
        name_or_path
    )


def train(args: argparse.Namespace) -> Path:
    """``mogradient-llm train``: returns the final checkpoint directory."""
    from accelerate import Accelerator

    from mogradient_llm.aggregation import build_aggregator
    from mogradient_llm.checkpoint import resolve_resume
    from mogradient_llm.rewards import build_reward, parse_reward_spec
    from mogradient_llm.trainer import MOPPOTrainer

    output_dir = Path(args.output_dir)
    config = _train_config(args)
    build_aggregator(config)  # typos in names fail here, before any model is built
    for spec in args.reward:
        parse_reward_spec(spec)
    resume = None
    if args.resume is not None:
        resume = resolve_resume(output_dir if args.resume is True else args.resume)
    accelerator = Accelerator(
        cpu=args.cpu, gradient_accumulation_steps=config.gradient_accumulation_steps
    )
    policy_path = args.policy
    if args.policy == TINY:  # built by the main process only, the others wait and load it
        policy_path = str(output_dir / "initial_policy")
        if accelerator.is_main_process and (resume is None or not Path(policy_path).is_dir()):
            _save_tiny_policy(args, policy_path)
        accelerator.wait_for_everyone()
    model, tokenizer = _load_lm(policy_path)
    ref_model = _load_lm(args.ref_policy)[0] if args.ref_policy else None
    rewards = [build_reward(spec, tokenizer) for spec in args.reward]
    prompts = _prompts(args, tokenizer, args.max_prompts, args.seed)
    trainer = MOPPOTrainer(
        config, model, tokenizer, rewards, prompts, ref_model=ref_model, accelerator=accelerator
    )
    if resume is not None and accelerator.is_main_process:
        print(f"resuming from {resume}")
    trainer.train(
        args.steps,
        output_dir,
        save_steps=args.save_steps,
        progress=not args.no_progress,
        extra_state={"policy_name_or_path": args.ref_policy or policy_path, "rewards": args.reward},
        resume_from=resume,
    )
    if accelerator.is_main_process:
        print(f"saved {output_dir / 'final'}")
    return output_dir / "final"


def _train_config(args: argparse.Namespace) -> MOPPOConfig:
    """The ``MOPPOConfig`` of ``--config`` overridden by the flags."""
    base = json.loads(Path(args.config).read_text()) if args.config else {}
    return MOPPOConfig.from_dict(
        {
            **base,
            "learning_rate": args.learning_rate,
            "batch_size": args.batch_size,
            "mini_batch_size": args.mini_batch_size,
            "ppo_epochs": args.ppo_epochs,
            "gradient_accumulation_steps": args.gradient_accumulation_steps,
            "kl_coef": args.kl_coef,
            "kl_estimator": args.kl_estimator,
            "normalize_weights": not args.no_normalize_weights,
            "seed": args.seed,
            "aggregator": args.aggregator,
            "aggregator_kwargs": args.aggregator_kwargs,
            "gramian_level": args.gramian_level,
            "parameter_gramian": args.parameter_gramian,
            "noon": not args.no_noon,
            "generation_kwargs": _generation_kwargs(args),
            "skip_nonfinite": args.skip_nonfinite,
            "lora_r": args.lora_r,
            "lora_alpha": args.lora_alpha,
            "lora_dropout": args.lora_dropout,
            "lora_target_modules": args.lora_target_modules,
        }
    )


def _save_tiny_policy(args: argparse.Namespace, path: str) -> None:
    """Build the tiny offline GPT-2 and save it, so it is loaded back through from_pretrained."""
    from mogradient_llm.data import load_text_dataset
    from mogradient_llm.models import build_tiny_policy

    texts = None
    if args.dataset:
        texts = load_text_dataset(args.dataset, args.split)[args.text_field][: args.max_prompts]
    model, tokenizer = build_tiny_policy(texts, args.tiny_pretrain_steps, seed=args.seed)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    """``mogradient-llm evaluate``: prints and returns the metrics."""
    from mogradient_llm.evaluate import evaluate_policy
    from mogradient_llm.rewards import build_reward
    from mogradient_llm.trainer import STATE_FILE

    state: dict[str, Any] = {}
    if args.checkpoint:
        state = json.loads((Path(args.checkpoint) / STATE_FILE).read_text())
    policy = args.policy or (str(Path(args.checkpoint) / "policy") if args.checkpoint else None)
    if policy is None:
        raise SystemExit("evaluate needs --checkpoint or --policy")
    model, tokenizer = _load_lm(policy)
    ref_path = args.ref_policy or state.get("policy_name_or_path")
    ref_model = _load_lm(ref_path)[0] if ref_path else None
    specs = args.reward or state.get("rewards")
    if not specs:
        raise SystemExit("evaluate needs --reward (or a checkpoint that records its rewards)")
    rewards = [build_reward(spec, tokenizer) for spec in specs]
    prompts = _prompts(args, tokenizer, None, args.seed)[: args.num_prompts]
    import torch

    torch.manual_seed(args.seed)
    result = evaluate_policy(
        model.eval(),
        tokenizer,
        rewards,
        prompts,
        _generation_kwargs(args),
        ref_model=ref_model.eval() if ref_model is not None else None,
        ref_point=args.ref_point,
        batch_size=args.batch_size,
    )
    result["eval/policy"] = policy
    result["eval/ref_policy"] = ref_path
    summary = {k: v for k, v in result.items() if k != "samples"}
    print(json.dumps(summary, indent=2))
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(result, indent=2))
    return result


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors caused by the user's input: reported in one line, exit status 2."""
    from mogradient_llm.rewards import RewardError
    from mogradient_llm.trainer import NonFiniteError

    return (ValueError, TypeError, FileNotFoundError, RewardError, NonFiniteError, ImportError)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``mogradient-llm`` script.

    User errors (bad flags or config, a reward that raises, non-finite values, a missing
    checkpoint) print one line ``mogradient-llm: error: ...`` and exit with status 2.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        _run(args)
    except _user_errors() as exc:
        message = " ".join(str(exc).split())  # one line, whatever the exception's text
        parser.exit(2, f"mogradient-llm: error: {type(exc).__name__}: {message}\n")


def _run(args: argparse.Namespace) -> None:
    """Dispatch the parsed command."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.command == "train":
        train(args)
    elif args.command == "evaluate":
        evaluate(args)
    else:
        import torch

        from mogradient_llm.demo import run_demo

        torch.set_num_threads(args.threads or 1)

        run_demo(
            args.data_dir,
            args.output_dir,
            args.minutes,
            args.aggregator,
            args.seed,
            pretrain_steps=args.pretrain_steps,
        )


if __name__ == "__main__":
    main()
