"""The checks of the properties that compare runs: the same inputs give the same outputs
(``deterministic``, ``reset_restores``), permuted objectives give the same direction and
permuted weights (``permutation_invariant``), scaled gradients a scaled direction
(``scale_equivariant``). Each has a ``_check_*``/``_compare_*`` used by
:func:`mogradient.testing.check_claims` through the property table, and a standalone
``assert_*``."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from mogradient.aggregation.kinds import AdvantageCombiner, Aggregator, GramianWeighting
from mogradient.testing.harness import (
    DEFAULT_TOLERANCE,
    AggregatorOrFactory,
    PropertyViolation,
    Steps,
    Tolerance,
    _as_steps,
    _copy,
    _f64,
    _fresh,
    _has_weights,
    _losses_for,
    _magnitude,
    _run,
    _twin,
    direction_of,
    make_factory,
    weights_of,
)

#: What a difference between two runs of the same inputs means, by property.
_SAME_MEANS = {
    "deterministic": (
        "two fresh instances with the same hyper-parameters give different outputs at step {t}",
        "a random stream without a fixed seed, or state shared between instances (a class "
        "attribute, a global)",
    ),
    "reset_restores": (
        "state not restored by reset(): the call at step {t} after reset() differs from the "
        "same call before it",
        "state carried between calls (a history, a running average, a random stream, a warm "
        "start) that reset() does not restore",
    ),
}


def _check_same(
    prop: str, agg: object, first: list[torch.Tensor], second: list[torch.Tensor], atol: float
) -> None:
    """The runs must agree bit for bit (``atol = 0``: the same inputs give the same bits, so a
    difference of any size, 1e-19 included, is a state bug, not rounding)."""
    what, cause = _SAME_MEANS[prop]
    for t, (a, b) in enumerate(zip(first, second, strict=True)):
        if a.shape != b.shape or a.dtype != b.dtype:
            raise PropertyViolation(
                prop,
                agg,
                f"{what.format(t=t)}: {tuple(a.shape)} {a.dtype} vs {tuple(b.shape)} {b.dtype}",
            )
        if atol == 0.0:
            same = torch.equal(a, b)
        else:
            same = bool((a.double() - b.double()).abs().max() <= atol) if a.numel() else True
        if not same:
            diff = (a.double() - b.double()).abs().nan_to_num(nan=math.inf).flatten()
            j = int(diff.argmax())
            compared = "compared bit for bit" if atol == 0.0 else f"tolerance {atol:g}"
            raise PropertyViolation(
                prop,
                agg,
                f"{what.format(t=t)} ({compared}; the inputs are the same, so any difference "
                f"is not rounding): coordinate {j} is {float(a.flatten()[j])!r} then "
                f"{float(b.flatten()[j])!r} (difference {float(diff[j]):.3g}); likely cause: "
                f"{cause}. First run {a}, second run {b}",
            )


def assert_deterministic(
    agg_or_factory: AggregatorOrFactory,
    jacobians: Steps,
    losses: torch.Tensor | Sequence[torch.Tensor] | None = None,
    *,
    atol: float = 0.0,
) -> list[torch.Tensor]:
    """Two fresh instances (same hyper-parameters and seed) give the same outputs on the same
    sequence of inputs (``jacobians``: one tensor or a list of steps). Returns the outputs."""
    factory = make_factory(agg_or_factory)
    steps = _as_steps(jacobians, losses)
    first = _run(_fresh(factory), steps)
    second_agg = _fresh(factory)
    _check_same("deterministic", second_agg, first, _run(second_agg, steps), atol)
    return first


def assert_reset_restores(
    agg_or_factory: AggregatorOrFactory,
    jacobians: Steps,
    losses: torch.Tensor | Sequence[torch.Tensor] | None = None,
    *,
    atol: float = 0.0,
) -> list[torch.Tensor]:
    """After running a sequence and calling ``reset()``, the same sequence gives the same
    outputs again (the first output included). Returns the outputs."""
    agg = _fresh(make_factory(agg_or_factory))
    steps = _as_steps(jacobians, losses)
    first = _run(agg, steps)
    agg.reset()
    _check_same("reset_restores", agg, first, _run(agg, steps), atol)
    return first


def _default_permutation(n: int) -> list[int]:
    """A permutation that moves every objective when n ≥ 2 (a rotation by one)."""
    return [*range(1, n), 0] if n > 1 else [0]


def _permute(
    steps: list[tuple[torch.Tensor, torch.Tensor | None]], perm: list[int]
) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    return [(j[perm], None if loss is None else loss[perm]) for j, loss in steps]


def _well_conditioned(jac: np.ndarray) -> bool:
    s = np.linalg.svd(jac, compute_uv=False)
    return s.size == jac.shape[0] and s.size > 0 and s[-1] >= 1e-4 * s[0] > 0


def _compare_permuted(
    agg: Aggregator,
    steps: list[tuple[torch.Tensor, torch.Tensor | None]],
    perm: list[int],
    reference: list[torch.Tensor],
    reference_weights: list[np.ndarray | None],
    tol: Tolerance,
) -> None:
    """Runs ``agg`` (fresh) on the permuted steps and compares with the reference run."""
    for t, (jac, loss) in enumerate(_permute(steps, perm)):
        w_ref = reference_weights[t]
        jac64 = _f64(steps[t][0])
        # Loss weights must follow the permutation; a Gramian method's weights only where the
        # Jacobian determines them (full row rank, well conditioned), else only d is defined;
        # a combiner's per-coordinate weights are not compared.
        compare_weights = (
            w_ref is not None
            and not isinstance(agg, AdvantageCombiner)
            and not (isinstance(agg, GramianWeighting) and not _well_conditioned(jac64))
        )
        w = weights_of(_copy(agg), jac, _losses_for(agg, jac, loss)) if compare_weights else None
        d = direction_of(agg, jac, _losses_for(agg, jac, loss)).detach()
        d_ref = _f64(reference[t])
        bound = tol.for_dtype(jac.dtype) * _magnitude(jac64, d_ref, w_ref)
        gap = float(np.linalg.norm(_f64(d) - d_ref))
        where = f"step {t}, permutation {perm}"
        if not gap <= bound:
            raise PropertyViolation(
                "permutation_invariant",
                agg,
                f"the direction moved by {gap:.3g} > {bound:.3g}: {d_ref} vs {_f64(d)}",
                where,
            )
        if w is None or w_ref is None:
            continue
        expected = w_ref[perm]
        wgap = float(np.max(np.abs(w - expected))) if w.size else 0.0
        # float64 weights: rtol(float64); a Gramian solve amplifies rounding by up to the
        # condition number of G (≤ 1e8 here), hence 1e3 × that for Gramian weightings
        relative = tol.for_dtype(torch.float64)
        if isinstance(agg, GramianWeighting):
            relative *= 1e3
        wbound = tol.weight_atol + relative * float(np.abs(expected).max())
        if not wgap <= wbound:
            raise PropertyViolation(
                "permutation_invariant",
                agg,
                f"weights {w} are not the permuted {expected} (gap {wgap:.3g} > {wbound:.3g})",
                where,
            )


def assert_permutation_invariant(
    agg_or_factory: AggregatorOrFactory,
    jacobians: Steps,
    losses: torch.Tensor | Sequence[torch.Tensor] | None = None,
    *,
    permutation: Sequence[int] | None = None,
    tol: Tolerance = DEFAULT_TOLERANCE,
) -> None:
    """Permuting the objectives (rows of every step's Jacobian and losses alike) gives the
    same direction, within ``rtol·M``, and weights permuted alike (loss weightings always;
    Gramian weightings where the Jacobian has full row rank with σ_min ≥ 1e-4·σ_max, since
    otherwise several weight vectors give the same direction). Default permutation: a
    rotation by one, which moves every objective."""
    factory = make_factory(agg_or_factory)
    steps = _as_steps(jacobians, losses)
    n = steps[0][0].shape[0]
    perm = list(permutation) if permutation is not None else _default_permutation(n)
    if sorted(perm) != list(range(n)):
        raise ValueError(f"{perm} is not a permutation of range({n})")
    agg = _fresh(factory)
    twin = _twin(agg, factory)
    reference: list[torch.Tensor] = []
    reference_weights: list[np.ndarray | None] = []
    for jac, loss in steps:
        w = weights_of(_copy(agg), jac, _losses_for(agg, jac, loss)) if _has_weights(agg) else None
        reference_weights.append(w)
        reference.append(direction_of(agg, jac, _losses_for(agg, jac, loss)).detach())
    _compare_permuted(twin, steps, perm, reference, reference_weights, tol)


def _scale_steps(
    steps: list[tuple[torch.Tensor, torch.Tensor | None]], factor: float
) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    return [((j.to(torch.float64) * factor).to(j.dtype), loss) for j, loss in steps]


def _compare_scaled(
    agg: Aggregator,
    steps: list[tuple[torch.Tensor, torch.Tensor | None]],
    factor: float,
    reference: list[torch.Tensor],
    reference_weights: list[np.ndarray | None],
    tol: Tolerance,
) -> None:
    scaled = _scale_steps(steps, factor)
    for t, (jac, loss) in enumerate(scaled):
        d = _f64(direction_of(agg, jac, _losses_for(agg, jac, loss)))
        expected = factor * _f64(reference[t])
        if not np.isfinite(d).all():
            raise PropertyViolation(
                "scale_equivariant", agg, f"non-finite output {d} at factor {factor:g}", f"step {t}"
            )
        bound = (
            tol.for_dtype(jac.dtype)
            * factor
            * _magnitude(_f64(steps[t][0]), _f64(reference[t]), reference_weights[t])
        )
        gap = float(np.linalg.norm(d - expected))
        if not gap <= bound:
            raise PropertyViolation(
                "scale_equivariant",
                agg,
                f"A({factor:g}·J) − {factor:g}·A(J) has norm {gap:.3g} > {bound:.3g}: "
                f"{d} vs {expected}",
                f"step {t}",
            )


def assert_scale_equivariant(
    agg_or_factory: AggregatorOrFactory,
    jacobians: Steps,
    losses: torch.Tensor | Sequence[torch.Tensor] | None = None,
    *,
    factor: float = 2.0**20,
    tol: Tolerance = DEFAULT_TOLERANCE,
) -> None:
    """``A(a·J) = a·A(J)`` for ``a = factor > 0`` (losses unchanged), within ``a·rtol·M``.

    The default factor is a power of two, so the scaled input is exact in any binary float
    format and only the method's own arithmetic is tested; pass other factors to include the
    rounding of the scaled input as well."""
    if not factor > 0 or not np.isfinite(factor):
        raise ValueError(f"factor must be finite and > 0, got {factor!r}")
    factory = make_factory(agg_or_factory)
    steps = _as_steps(jacobians, losses)
    agg = _fresh(factory)
    twin = _twin(agg, factory)
    reference = []
    reference_weights: list[np.ndarray | None] = []
    for jac, loss in steps:
        w = weights_of(_copy(agg), jac, _losses_for(agg, jac, loss)) if _has_weights(agg) else None
        reference_weights.append(w)
        reference.append(direction_of(agg, jac, _losses_for(agg, jac, loss)).detach())
    _compare_scaled(twin, steps, factor, reference, reference_weights, tol)
