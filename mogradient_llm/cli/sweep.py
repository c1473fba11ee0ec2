"""``mogradient-llm sweep``: its own flags (preferences, KL budgets, held-out evaluation) into
a :class:`~mogradient_llm.pareto.sweep.SweepOptions`, every other flag ``train``'s, then
:func:`mogradient_llm.pareto.sweep.run_sweep` (one run per preference) or, with
``--conditioned``, :func:`mogradient_llm.pareto.conditioned.run_conditioned_sweep` (one
conditioned policy evaluated at every preference)."""

from __future__ import annotations

import argparse

from mogradient_llm.cli.common import float_list
from mogradient_llm.cli.train import parse_train_args
from mogradient_llm.config import MOConfig
from mogradient_llm.inputs.preferences import normalize_preference
from mogradient_llm.pareto.sweep import SweepOptions, preference_lattice
from mogradient_llm.specs import RunSpec

_DEFAULTS = SweepOptions(preferences=((1.0,),))


def sweep_parser() -> argparse.ArgumentParser:
    """``mogradient-llm sweep``'s own flags; every other flag is ``train``'s."""
    parser = argparse.ArgumentParser(
        prog="mogradient-llm sweep",
        description="Train one policy per preference (a preference-aware --aggregator: "
        "linear, tchebycheff, stch, epo, upgrad, ...), evaluate every checkpoint on held-out "
        "prompts, and write OUT/front.csv, front.png, kl_curve.csv, kl_curve.png and "
        "summary.json. Runs live in OUT/runs/<preference>/; finished ones are reused, "
        "interrupted ones resume. With --conditioned: train one preference-conditioned policy "
        "(OUT/conditioned/) and evaluate it at every preference instead: front.csv, front.png, "
        "controllability.csv, summary.json.",
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
        type=float_list,
        help="one preference, comma-separated, one entry per --reward (normalised to sum to "
        "1); repeat for several runs",
    )
    group.add_argument(
        "--kl-budgets",
        type=float_list,
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
    group.add_argument(
        "--eval-split", default=_DEFAULTS.eval_split, help="held-out split of the prompts"
    )
    group.add_argument("--eval-num-prompts", type=int, default=_DEFAULTS.eval_num_prompts)
    group.add_argument("--eval-batch-size", type=int, default=_DEFAULTS.eval_batch_size)
    group.add_argument("--eval-seed", type=int, default=_DEFAULTS.eval_seed)
    group.add_argument(
        "--ref-point",
        type=float_list,
        help="hypervolume reference point, comma-separated (default: each reward's worst value)",
    )
    return parser


def parse_sweep_args(argv: list[str]) -> tuple[RunSpec, MOConfig, SweepOptions]:
    """``sweep``'s options, then ``train``'s run and config (:func:`parse_train_args`) from the
    remaining flags."""
    own, rest = sweep_parser().parse_known_args(argv)
    run, config = parse_train_args(rest)
    k = len(run.rewards)
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
    return run, config, options


def main(argv: list[str]) -> None:
    """Parse ``sweep``'s flags and run the sweep (``--conditioned``: one conditioned policy)."""
    from mogradient_llm.pareto.conditioned import run_conditioned_sweep
    from mogradient_llm.pareto.sweep import run_sweep

    run, config, options = parse_sweep_args(argv)
    (run_conditioned_sweep if config.conditioned else run_sweep)(run, config, options)
