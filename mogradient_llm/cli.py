"""``mogradient-llm``: ``train``, ``sweep``, ``evaluate`` and ``demo`` commands."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from mogradient_llm.config import MOConfig
from mogradient_llm.estimators import ESTIMATORS, estimator_class

if TYPE_CHECKING:
    from transformers import HfArgumentParser
    from transformers.hf_argparser import DataClassType

    from mogradient_llm.sweep import SweepOptions

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
    group.add_argument(
        "--prompt-column", default="prompt", help="the dataset's prompt column, used as it is"
    )
    group.add_argument(
        "--imdb-prompts",
        action="store_true",
        help="instead, cut the --text-field texts (reviews) into prompts of their first "
        "--prompt-min-tokens..--prompt-max-tokens tokens",
    )
    group.add_argument("--text-field", default="text")
    group.add_argument("--max-prompts", type=int, default=None, help="use the first N rows")
    group.add_argument("--prompt-min-tokens", type=int, default=2)
    group.add_argument("--prompt-max-tokens", type=int, default=8)


def _add_generation_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--temperature", type=float, default=1.0)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser of ``mogradient-llm``; ``train``'s own flags are generated from the
    config dataclasses by :func:`train_parser` (``mogradient-llm train --help`` lists them)."""
    parser = argparse.ArgumentParser(
        prog="mogradient-llm",
        description="Multi-objective RL fine-tuning (PPO, GRPO, RLOO) with mogradient",
    )
    parser.add_argument(
        "--threads",
        type=int,
        help="torch CPU threads (torch.set_num_threads); default: torch's own, 1 for demo "
        "(tiny models run fastest on one thread, above all on a busy machine)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser(
        "train",
        add_help=False,
        help="train a policy (mogradient-llm train --algorithm ppo|grpo|rloo --help)",
    )
    sub.add_parser(
        "sweep",
        add_help=False,
        help="train one policy per preference and write the front, also at matched KL "
        "(mogradient-llm sweep --help)",
    )

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
    demo.add_argument("--algorithm", choices=sorted(ESTIMATORS), default="ppo")
    demo.add_argument("--data-dir", help="IMDb subset directory (default: ../shared/data/imdb)")
    demo.add_argument("--output-dir", default="outputs/demo")
    demo.add_argument("--minutes", type=float, default=3.0, help="training time budget")
    demo.add_argument("--pretrain-steps", type=int, default=400)
    demo.add_argument("--aggregator", default="pama")
    demo.add_argument("--seed", type=int, default=0)
    return parser


def _json_object(text: str) -> dict[str, Any]:
    """A JSON object from the command line (dict-valued config fields)."""
    value = json.loads(text)
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


def _add_run_args(parser: argparse.ArgumentParser) -> None:
    """What a run needs besides its config: models, rewards, output, resuming."""
    run = parser.add_argument_group("run")
    run.add_argument(
        "--algorithm",
        choices=sorted(ESTIMATORS),
        default="ppo",
        help="the advantage estimator (its config's flags follow)",
    )
    run.add_argument(
        "--config",
        help="a JSON or YAML file of config fields (and 'algorithm'); flags given override it",
    )
    run.add_argument("--policy", default=TINY, help="model name or path, or 'tiny' (offline)")
    run.add_argument("--ref-policy", help="KL reference (default: a frozen copy of --policy)")
    run.add_argument(
        "--reward",
        action="append",
        required=True,
        help="[NAME=]SPEC, SPEC one of length[:chars|words|tokens], vader, distinct[:N], "
        "classifier:PATH[@LABEL] or a Python function's import path module.function; NAME= "
        "renames the objective; repeat per objective",
    )
    run.add_argument("--output-dir", required=True)
    run.add_argument("--save-steps", type=int, default=0, help="checkpoint every N steps")
    run.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=None,
        help="continue from the newest complete checkpoint of --output-dir (or of the given "
        "checkpoint/run directory) up to --steps in total",
    )
    run.add_argument("--tiny-pretrain-steps", type=int, default=200)
    run.add_argument("--no-progress", action="store_true")
    run.add_argument(
        "--cpu",
        action="store_true",
        help="run on CPU even where a GPU is present; several CPU processes (gloo) need it: "
        "torchrun --nproc_per_node 2 -m mogradient_llm train --cpu ...",
    )
    run.add_argument(
        "--max-new-tokens",
        type=int,
        help="shorthand for generation_kwargs' max_new_tokens",
    )
    run.add_argument(
        "--temperature", type=float, help="shorthand for generation_kwargs' temperature"
    )
    _add_data_args(parser, "train")


def train_parser(algorithm: str) -> HfArgumentParser:
    """``mogradient-llm train``'s parser for ``algorithm``: the run's flags, then one flag per
    field of its config dataclass (``transformers.HfArgumentParser``: help text, choices and
    defaults come from the dataclass; booleans get ``--no-...``)."""
    from transformers import HfArgumentParser

    config_class = estimator_class(algorithm).config_class
    parser = HfArgumentParser(
        cast("DataClassType", config_class),
        prog="mogradient-llm train",
        description=f"Train with {algorithm.upper()}; {config_class.__name__}'s fields as flags.",
    )
    dict_fields = {f.name for f in dataclasses.fields(config_class) if "dict" in str(f.type)}
    for action in parser._actions:  # argparse offers no public way to change an action's type
        if action.dest in dict_fields:
            action.type = _json_object
    _add_run_args(parser)
    return parser


def parse_train_args(argv: list[str]) -> tuple[argparse.Namespace, MOConfig]:
    """The run's arguments and the config: ``--config``'s values, then the flags given."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--algorithm")
    pre.add_argument("--config")
    known, _ = pre.parse_known_args(argv)
    values = _read_config_file(known.config) if known.config else {}
    algorithm = known.algorithm or values.pop("algorithm", "ppo")
    values.pop("algorithm", None)
    parser = train_parser(algorithm)
    config_class = estimator_class(algorithm).config_class
    fields = {f.name for f in dataclasses.fields(config_class)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ValueError(
            f"unknown key(s) {unknown} in {known.config} for --algorithm {algorithm}; "
            f"valid: {sorted(fields)}"
        )
    parser.set_defaults(**values)
    args = parser.parse_args(argv)
    args.algorithm = algorithm
    config_values = {name: getattr(args, name) for name in fields}
    generation = dict(config_values["generation_kwargs"])
    for key in ("max_new_tokens", "temperature"):
        if getattr(args, key) is not None:
            generation[key] = getattr(args, key)
    config_values["generation_kwargs"] = generation
    return args, config_class(**config_values)


def sweep_parser() -> argparse.ArgumentParser:
    """``mogradient-llm sweep``'s own flags; every other flag is ``train``'s."""
    parser = argparse.ArgumentParser(
        prog="mogradient-llm sweep",
        description="Train one policy per preference (a preference-aware --aggregator: "
        "linear, tchebycheff, stch, epo, upgrad, ...), evaluate every checkpoint on held-out "
        "prompts, and write OUT/front.csv, front.png, kl_curve.csv, kl_curve.png and "
        "summary.json. Runs live in OUT/runs/<preference>/; finished ones are reused, "
        "interrupted ones resume.",
        allow_abbrev=False,
        epilog="Every flag of 'mogradient-llm train --algorithm ALG --help' is accepted too; "
        "--output-dir is the sweep's directory OUT.",
    )
    group = parser.add_argument_group("sweep")
    group.add_argument(
        "--preferences",
        type=int,
        help="a lattice of N evenly spread preferences over the simplex (2 objectives, 5: "
        "[0,1], [.25,.75], ..., [1,0]); default 5 unless --preference is given",
    )
    group.add_argument(
        "--preference",
        action="append",
        type=_float_list,
        help="one preference, comma-separated, one entry per --reward (normalised to sum to "
        "1); repeat for several runs",
    )
    group.add_argument(
        "--kl-budgets",
        type=_float_list,
        default=[],
        help="also report the front at these held-out KL budgets (nats per sequence), "
        "comma-separated: each run gives its last checkpoint within the budget (--save-steps)",
    )
    group.add_argument(
        "--rewarded-soups",
        type=int,
        default=0,
        metavar="N",
        help="also train one run per objective (one-hot preference) and interpolate their "
        "weights (LoRA adapters with --lora-r, else the whole policy) at N mixing weights "
        "(Rewarded Soups, Rame et al. 2023); writes OUT/soups.csv",
    )
    group.add_argument("--eval-split", default="test", help="held-out split of the prompts")
    group.add_argument("--eval-num-prompts", type=int, default=64)
    group.add_argument("--eval-batch-size", type=int, default=32)
    group.add_argument("--eval-seed", type=int, default=0)
    group.add_argument(
        "--ref-point",
        type=_float_list,
        help="hypervolume reference point, comma-separated (default: each reward's worst value)",
    )
    return parser


def parse_sweep_args(
    argv: list[str],
) -> tuple[argparse.Namespace, MOConfig, SweepOptions]:
    """``sweep``'s options, then ``train``'s arguments and config (:func:`parse_train_args`)
    from the remaining flags."""
    from mogradient_llm.sweep import SweepOptions, normalize_preference, preference_lattice

    own, rest = sweep_parser().parse_known_args(argv)
    args, config = parse_train_args(rest)
    k = len(args.reward)
    if own.preference and own.preferences is not None:
        raise ValueError("give either --preferences N (a lattice) or --preference a,b, not both")
    if own.preference:
        preferences = [normalize_preference(p, k) for p in own.preference]
    else:
        preferences = preference_lattice(k, 5 if own.preferences is None else own.preferences)
    options = SweepOptions(
        preferences=tuple(preferences),
        kl_budgets=tuple(own.kl_budgets),
        eval_split=own.eval_split,
        eval_num_prompts=own.eval_num_prompts,
        eval_batch_size=own.eval_batch_size,
        eval_seed=own.eval_seed,
        ref_point=tuple(own.ref_point) if own.ref_point is not None else None,
        rewarded_soups=own.rewarded_soups,
    )
    return args, config, options


def _read_config_file(path: str) -> dict[str, Any]:
    """A config file's values: JSON, or YAML (``.yaml``/``.yml``)."""
    text = Path(path).read_text()
    if Path(path).suffix in (".yaml", ".yml"):
        import yaml  # type: ignore[import-untyped]

        values = yaml.safe_load(text) or {}
    else:
        values = json.loads(text)
    if not isinstance(values, dict):
        raise ValueError(
            f"{path} must hold a mapping of config fields, got {type(values).__name__}"
        )
    return values


def _prompts(
    args: argparse.Namespace, tokenizer: Any, limit: int | None, seed: int
) -> list[dict[str, Any]]:
    """The prompt rows: a dataset's prompt column as it is, its texts cut into IMDb-style
    prompts (``--imdb-prompts``), or, without ``--dataset``, generated reviews cut so."""
    from mogradient_llm.data import as_prompt_rows, imdb_prompts, load_prompt_dataset, load_prompts
    from mogradient_llm.models import synthetic_reviews

    cut = (args.prompt_min_tokens, args.prompt_max_tokens)
    if args.dataset and args.imdb_prompts:
        texts = load_prompts(
            args.dataset, tokenizer, args.split, args.text_field, limit, *cut, seed=seed
        )
        return as_prompt_rows(texts)
    if args.dataset:
        return load_prompt_dataset(args.dataset, args.split, args.prompt_column, limit)
    texts = synthetic_reviews(limit or 1000, seed=seed + (1 if args.split == "test" else 0))
    return as_prompt_rows(imdb_prompts(texts, tokenizer, *cut, min_chars=0, seed=seed))


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


def train(args: argparse.Namespace, config: MOConfig) -> Path:
    """``mogradient-llm train``: returns the final checkpoint directory."""
    from accelerate import Accelerator

    from mogradient_llm.aggregation import build_aggregator
    from mogradient_llm.checkpoint import resolve_resume
    from mogradient_llm.reward_specs import build_reward, check_reward_specs
    from mogradient_llm.trainer import MOTrainer

    output_dir = Path(args.output_dir)
    build_aggregator(config)  # typos in names fail here, before any model is built
    check_reward_specs(args.reward)
    resume = None
    if args.resume is not None:
        resume = resolve_resume(output_dir if args.resume is True else args.resume)
    accelerator = Accelerator(
        cpu=args.cpu,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        log_with=config.trackers or None,
        project_dir=str(output_dir),
    )
    policy_path = args.policy
    if args.policy == TINY:  # built by the main process only, the others wait and load it
        policy_path = str(output_dir / "initial_policy")
        if accelerator.is_main_process and (resume is None or not Path(policy_path).is_dir()):
            _save_tiny_policy(args, policy_path, config.seed)
        accelerator.wait_for_everyone()
    model, tokenizer = _load_lm(policy_path)
    ref_model = _load_lm(args.ref_policy)[0] if args.ref_policy else None
    rewards = [build_reward(spec, tokenizer) for spec in args.reward]
    prompts = _prompts(args, tokenizer, args.max_prompts, config.seed)
    trainer = MOTrainer(
        config, model, tokenizer, rewards, prompts, ref_model=ref_model, accelerator=accelerator
    )
    if resume is not None and accelerator.is_main_process:
        print(f"resuming from {resume}")
    trainer.train(
        config.max_steps,
        output_dir,
        save_steps=args.save_steps,
        progress=not args.no_progress,
        extra_state={"policy_name_or_path": args.ref_policy or policy_path, "rewards": args.reward},
        resume_from=resume,
    )
    if accelerator.is_main_process:
        print(f"saved {output_dir / 'final'}")
    return output_dir / "final"


def _save_tiny_policy(args: argparse.Namespace, path: str, seed: int) -> None:
    """Build the tiny offline GPT-2 and save it, so it is loaded back through from_pretrained."""
    from mogradient_llm.data import load_text_dataset
    from mogradient_llm.models import build_tiny_policy

    texts = None
    if args.dataset:
        texts = load_text_dataset(args.dataset, args.split)[args.text_field][: args.max_prompts]
    model, tokenizer = build_tiny_policy(texts, args.tiny_pretrain_steps, seed=seed)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    """``mogradient-llm evaluate``: prints and returns the metrics."""
    from mogradient_llm.evaluate import evaluate_policy
    from mogradient_llm.reward_specs import build_reward, check_reward_specs
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
    check_reward_specs(specs)
    rewards = [build_reward(spec, tokenizer) for spec in specs]
    rows = _prompts(args, tokenizer, None, args.seed)[: args.num_prompts]
    import torch

    torch.manual_seed(args.seed)
    result = evaluate_policy(
        model.eval(),
        tokenizer,
        rewards,
        rows,
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
    args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    if rest and args.command not in ("train", "sweep"):
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        _run(args, rest)
    except _user_errors() as exc:
        message = " ".join(str(exc).split())  # one line, whatever the exception's text
        parser.exit(2, f"mogradient-llm: error: {type(exc).__name__}: {message}\n")


def _run(args: argparse.Namespace, rest: list[str]) -> None:
    """Dispatch the parsed command (``rest``: ``train``'s or ``sweep``'s own flags)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.command == "train":
        train_args, config = parse_train_args(rest)
        train(train_args, config)
    elif args.command == "sweep":
        from mogradient_llm.sweep import run_sweep

        run_sweep(*parse_sweep_args(rest))
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
            algorithm=args.algorithm,
        )


if __name__ == "__main__":
    main()
