"""The three kinds of aggregation method, as base classes, by the data each decides from.

* :class:`GramianWeighting` — loss weights from the k×k Gramian ``G = J Jᵀ`` of the objectives'
  gradients (MGDA, PCGrad, CAGrad, UPGrad, ...). Stateful methods (GradVac's EMA, a warm start)
  keep their state in the object and clear it in :meth:`Aggregator.reset`.
* :class:`LossWeighting` — loss weights from the current loss values and, where the method
  needs it, their history (linear, mean, DWA, FAMO, STCH, ...): a scalarizer, trained with one
  backward of ``Σ wᵢ Lᵢ``.
* :class:`AdvantageCombiner` — one combined coefficient per sample from per-sample, per-objective
  coefficients under a mask (PAMA on RL advantages).

Weighting (statistics → weights) is kept apart from combining (weights → direction or
``Σ wᵢ Lᵢ``): a Gramian method never needs more than the k×k Gramian to decide. Deciding is
never differentiated: weights and directions come out of ``torch.no_grad()``, as in TorchJD.
:func:`mogradient.aggregators.dispatch.dispatch` is the one place that switches on the kind.

Each method declares the properties it claims in :attr:`Aggregator.properties`;
``mogradient.testing`` checks them (see ``docs/testing.md``).
"""

from __future__ import annotations

import copy
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import ClassVar, Literal, NamedTuple, overload

import numpy as np
import torch

from mogradient._checks import check_gramian, check_jacobian, check_loss_values
from mogradient._psd import project_psd, symmetric_error2
from mogradient.aggregators._scale import (
    GRAMIAN_WINDOW,
    combine,
    even_exponent_into_range,
    jacobian_exponent,
    jacobian_window,
    times_pow2,
)
from mogradient.solvers.qp import CheckedGramian

#: A property an aggregator may claim; each has a check in ``mogradient.testing``.
Property = Literal[
    "simplex_weights",  # weights ≥ 0 summing to 1
    "non_negative_weights",  # weights ≥ 0
    "non_conflicting",  # J d ≥ 0: no objective gets worse to first order
    "permutation_invariant",  # permuting the objectives permutes the weights alike
    "scale_equivariant",  # A(a·J) = a·A(J) for a > 0
    "min_norm_kkt",  # weights solve min cᵀGc on the simplex (KKT conditions hold)
    "deterministic",  # the same inputs (and seed) give the same output
    "reset_restores",  # after reset() the first result is reproduced
    "non_differentiable",  # the output carries no autograd graph
]

AllReduceSum = Callable[[torch.Tensor], torch.Tensor]


class Aggregator(ABC):
    """What every method shares: validated hyper-parameters, a readable ``repr``, state that
    :meth:`reset` clears, declared properties, and ``agg(jacobian) → direction``.

    Subclass one of the three kinds below, not this class.
    """

    #: The properties this method claims; the contract test checks every claim.
    properties: ClassVar[frozenset[Property]] = frozenset()
    #: Whether the method takes ``preference=`` (a :class:`~mogradient.aggregators.Preference`,
    #: one point of the simplex): a Pareto sweep varies it, and ``reward_weights`` feed it.
    preference_aware: ClassVar[bool] = False
    #: Whether the method takes ``seed=`` (a random stream of its own).
    seeded: ClassVar[bool] = False
    #: Whether the method refuses negative loss values (it takes their logarithm or ratio, or
    #: its objective is unbounded below for them): shift such losses by a known lower bound.
    needs_positive_losses: ClassVar[bool] = False
    #: Non-default hyper-parameter settings the contract test checks besides the defaults (the
    #: drawn preference and another seed are added from the facts above). A value
    #: ``DRAWN_PREFERENCE`` / ``DRAWN_SPARSE_PREFERENCE`` (``mogradient.aggregators.preference``)
    #: stands for a preference drawn for the problem at hand.
    example_settings: ClassVar[tuple[Mapping[str, object], ...]] = ()

    @abstractmethod
    def __call__(self, jacobian: torch.Tensor, losses: torch.Tensor | None = None) -> torch.Tensor:
        """The aggregated direction ``[d]`` for a Jacobian ``[n_objectives, d]`` (and, for loss
        weightings that decide from them, the loss values ``[n_objectives]``)."""

    def claims(self) -> frozenset[Property]:
        """The properties this instance claims (by default the class's :attr:`properties`;
        override where a claim depends on a hyper-parameter, e.g. CAGrad's ``c ≥ 1``)."""
        return self.properties

    def reset(self) -> None:
        """Forget any state carried between steps (stateless methods: nothing to do)."""
        return None

    def state_dict(self) -> dict[str, object]:
        """A copy of everything the method carries between calls (hyper-parameters, histories,
        random streams), for checkpoints; :meth:`load_state_dict` puts it back."""
        return copy.deepcopy(self.__dict__)

    def load_state_dict(self, state: dict[str, object]) -> None:
        """Restore what :meth:`state_dict` returned (on an instance of the same class)."""
        self.__dict__.update(copy.deepcopy(state))

    def _hyperparameters(self) -> dict[str, object]:
        return {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._hyperparameters().items())
        return f"{type(self).__name__}({args})"


class GramianWeighting(Aggregator):
    """Loss weights decided from the Gramian (and, for the few methods that also read them, the
    current loss values: EPO); the solve runs on float64 numpy.

    Range: the Gramian is scaled by a power of two (exact) into the solvers' range before the
    solve and the weights are mapped back by :meth:`weight_exponent` (and the norm cap of
    :meth:`norm_cap`), so gradients of any finite scale work when the method is called on the
    Jacobian: ``agg(J)`` scales ``J`` itself before forming ``J Jᵀ``
    (:func:`scaled_gramian`).
    """

    #: Whether the method also reads the loss values (then ``weights`` needs ``losses=``).
    uses_loss_values: ClassVar[bool] = False
    #: Whether ``agg(J)`` sums ``Σ wᵢ gᵢ`` in float64 blocks for a low-precision Jacobian
    #: (methods whose sums cancel heavily near a Pareto-stationary point: CAGrad).
    combine_in_float64: ClassVar[bool] = False

    @abstractmethod
    def _solve(self, gramian: np.ndarray) -> np.ndarray:
        """Weights ``[n]`` for a validated, C-contiguous float64 Gramian ``[n, n]``, before the
        norm cap of :meth:`norm_cap`."""

    def _solve_with_losses(self, gramian: np.ndarray, losses: np.ndarray) -> np.ndarray:
        """Weights from the Gramian and validated loss values ``[n]`` (methods with
        ``uses_loss_values`` override this; the others ignore the losses)."""
        return self._solve(gramian)

    def weight_exponent(self) -> float:
        """``p`` with ``w(κG) = κ^p · w(G)`` for every ``κ > 0`` (before the norm cap): under
        ``J → aJ`` the direction scales as ``a^(2p+1)``. 0 (the default): the weights depend on
        G only up to a positive factor, and the direction is scale-equivariant."""
        return 0.0

    def norm_cap(self) -> float | None:
        """The largest norm ``‖Σ wᵢ gᵢ‖`` the weights are scaled down to (``None``: none)."""
        return None

    def _loss_values(self, n: int, losses: np.ndarray | torch.Tensor | None) -> np.ndarray | None:
        """The validated loss values ``[n]`` (``None`` when not given and not needed)."""
        if losses is None:
            if self.uses_loss_values:
                raise ValueError(
                    f"{self!r} decides from the Gramian and the loss values; pass "
                    "losses= (one value per objective)"
                )
            return None
        values = check_loss_values(losses)
        if values.shape[0] != n:
            raise ValueError(
                f"got {values.shape[0]} loss values for {n} objectives (a {n}x{n} Gramian); "
                "pass one loss value per objective"
                + ("" if self.uses_loss_values else f", or none: {self!r} does not read them")
            )
        return values

    def _scaled_weights(
        self, gramian: CheckedGramian, values: np.ndarray | None, log2_scale: int
    ) -> tuple[np.ndarray, float]:
        """Weights of the Gramian ``G = 2^log2_scale · gramian`` as ``(v, t)``: ``w = 2^t·v``.

        The solve sees ``2^K G`` (``2^k · gramian``, its largest diagonal entry brought into
        [1/4, 1) where it lies outside 2^±256); then ``w(G) = 2^(−Kp) · w(2^K G)``, and the cap
        ``‖Σ wᵢ gᵢ‖ = 2^(t − K/2) √(vᵀ(2^K G)v) ≤ cap`` is applied in the same frame.
        """
        k = even_exponent_into_range(float(np.max(np.diagonal(gramian))), GRAMIAN_WINDOW)
        g = gramian
        if k:
            g = np.ascontiguousarray(times_pow2(np.asarray(gramian), k)).view(CheckedGramian)
            g.tol = gramian.tol
        big_k = k - log2_scale
        v = self._solve(g) if values is None else self._solve_with_losses(g, values)
        p = self.weight_exponent()
        t = -big_k * p if p else 0.0
        cap = self.norm_cap()
        if cap is not None:
            norm = math.sqrt(max(float(v @ np.asarray(g) @ v), 0.0))
            if times_pow2(norm, t - big_k / 2) > cap:
                v = v * (cap / norm)
                t = big_k / 2
        return v, t

    @overload
    def weights(
        self, gramian: np.ndarray, losses: np.ndarray | torch.Tensor | None = None
    ) -> np.ndarray: ...
    @overload
    def weights(
        self, gramian: torch.Tensor, losses: np.ndarray | torch.Tensor | None = None
    ) -> torch.Tensor: ...
    def weights(
        self,
        gramian: np.ndarray | torch.Tensor,
        losses: np.ndarray | torch.Tensor | None = None,
    ) -> np.ndarray | torch.Tensor:
        """Float64 weights ``[n]`` for a Gramian ``[n, n]`` (numpy in → numpy out, torch in →
        torch out on the Gramian's device); ``losses`` (``[n]``) where the method reads them
        (the others accept one finite value per objective and ignore them)."""
        g = check_gramian(gramian)
        v, t = self._scaled_weights(g, self._loss_values(g.shape[0], losses), 0)
        with np.errstate(over="ignore", under="ignore"):
            w = times_pow2(v, t)
        if t and np.isfinite(v).all() and not np.isfinite(w).all():
            raise ValueError(
                f"the weights of {self!r} for this Gramian (largest diagonal entry "
                f"{float(np.max(np.diagonal(g))):.3g}) are beyond float64's range; call the "
                "method on the Jacobian instead (agg(J) returns the direction, which is in range)"
            )
        if isinstance(gramian, torch.Tensor):
            return torch.as_tensor(w, dtype=torch.float64, device=gramian.device)
        return w

    def __call__(self, jacobian: torch.Tensor, losses: torch.Tensor | None = None) -> torch.Tensor:
        jacobian = check_jacobian(jacobian)
        with torch.no_grad():
            gram, e = scaled_gramian(jacobian)
            g = check_gramian(gram)
            v, t = self._scaled_weights(g, self._loss_values(g.shape[0], losses), -2 * e)
            return combine(torch.from_numpy(v), jacobian, t, e, in_float64=self.combine_in_float64)


class LossWeighting(Aggregator):
    """Loss weights decided from the current loss values (and, if the method keeps it, their
    history): a scalarizer. Training costs one backward of ``Σ wᵢ Lᵢ``.

    Subclasses implement :meth:`_weigh`; methods that use only the number of objectives set
    ``uses_loss_values = False`` and can then be called on a Jacobian alone.
    """

    #: Whether :meth:`_weigh` reads the loss values (False: only their number).
    uses_loss_values: ClassVar[bool] = True

    @abstractmethod
    def _weigh(self, losses: np.ndarray) -> np.ndarray:
        """Float64 weights ``[n]`` for validated finite float64 loss values ``[n]``; may update
        the method's state (history, learned scales, random stream)."""

    @overload
    def weights(self, losses: np.ndarray) -> np.ndarray: ...
    @overload
    def weights(self, losses: torch.Tensor) -> torch.Tensor: ...
    def weights(self, losses: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """Float64 weights ``[n]`` for loss values ``[n]`` (numpy in → numpy out, torch in →
        torch out). Stateful methods advance their state on every call."""
        w = self._weigh(check_loss_values(losses))
        if isinstance(losses, torch.Tensor):
            return torch.as_tensor(w, dtype=torch.float64, device=losses.device)
        return w

    def scalarize(self, losses: torch.Tensor) -> torch.Tensor:
        """``Σ wᵢ Lᵢ`` with ``w`` decided from the detached losses: its gradient is the
        method's update (its value is the weighted sum, whatever the method's own objective)."""
        w = self.weights(losses.detach())
        return w.to(losses.dtype) @ losses

    def __call__(self, jacobian: torch.Tensor, losses: torch.Tensor | None = None) -> torch.Tensor:
        jacobian = check_jacobian(jacobian)
        if losses is None:
            if self.uses_loss_values:
                raise ValueError(
                    f"{self!r} decides from the loss values; call it as "
                    "agg(jacobian, losses=...) with one loss value per row of the Jacobian"
                )
            losses = torch.zeros(jacobian.shape[0], dtype=torch.float64)
        if losses.shape != (jacobian.shape[0],):
            raise ValueError(
                f"got {tuple(losses.shape)} loss values for a Jacobian with "
                f"{jacobian.shape[0]} rows; pass one loss value per objective"
            )
        with torch.no_grad():
            w = self.weights(losses.detach().to(jacobian.device))
            return w.to(jacobian.dtype) @ jacobian


class Combination(NamedTuple):
    """What an :class:`AdvantageCombiner` returns.

    ``combined``: one coefficient per sample ``[*batch]`` (zero where the mask is 0);
    ``weights``: the simplex weights used, ``[n, *batch]`` per sample or ``[n]`` for the batch;
    ``s_star``: the combined value per sample, or one number for the batch.
    """

    combined: torch.Tensor
    weights: torch.Tensor
    s_star: torch.Tensor


class AdvantageCombiner(Aggregator):
    """One coefficient per sample from per-objective coefficients (RL advantages) under a mask.

    Costs no Gramian and no extra backward: the update is the ordinary policy-gradient loss with
    the combined advantage. On a Jacobian ``[n, d]`` each coordinate is treated as a sample whose
    shared direction is that coordinate's unit vector.
    """

    @abstractmethod
    def combine(
        self,
        advantages: torch.Tensor,
        mask: torch.Tensor | None = None,
        all_reduce_sum: AllReduceSum | None = None,
        valid: torch.Tensor | None = None,
    ) -> Combination:
        """Combine ``advantages [n, *batch]`` under ``mask [*batch]`` (1 = a real sample).

        ``all_reduce_sum`` sums a tensor over the processes; methods that decide from batch
        statistics use it so that every rank decides the same. ``valid [n, *batch]`` (bool,
        default all) says which objectives scored each sample (an RL reward may return
        ``None``): the others take no part in that sample's combination, and a sample no
        objective scored takes no part at all.
        """

    def __call__(self, jacobian: torch.Tensor, losses: torch.Tensor | None = None) -> torch.Tensor:
        jacobian = check_jacobian(jacobian)
        with torch.no_grad():
            return self.combine(jacobian).combined


def gramian_of(
    jacobian: torch.Tensor,
    chunk_size: int = 1 << 20,
    *,
    precision: Literal["float64", "input"] = "float64",
    block_size: int = 1024,
) -> torch.Tensor:
    """``J Jᵀ`` as a float64 ``[k, k]`` matrix on the Jacobian's device, over column chunks.

    Where the product overflows or underflows, ``J`` is scaled by a power of two (exact) and the
    product scaled back (:func:`scaled_gramian`): any float32 Jacobian, and float64 gradients
    of norm between about 1e-154 and 1e154, give their Gramian; beyond, ``J Jᵀ`` itself is not
    a float64 number and a ``ValueError`` says so (``agg(J)`` still works there: it decides on
    the scaled Gramian).

    ``precision="float64"`` (the default): each chunk of ``chunk_size`` columns is copied to
    float64 and multiplied there; the result is exact to float64 rounding.

    ``precision="input"``: no float64 copy of J. The columns are cut into blocks of
    ``block_size``; each block's k×k product is taken in the Jacobian's dtype (float32 at
    least: bfloat16/float16 blocks are raised to float32) by one batched matmul per chunk,
    and the blocks' products are summed in float64. Each entry then satisfies

        |Ĝᵢⱼ − Gᵢⱼ| ≤ γ_b · Σ_blocks ‖gᵢ⁽ᵇ⁾‖ ‖gⱼ⁽ᵇ⁾‖ ≤ γ_b · ‖gᵢ‖ ‖gⱼ‖,
        γ_b = b·u / (1 − b·u),  u = 2⁻²⁴ (float32), b = block_size,

    (the standard dot-product bound per block, Cauchy–Schwarz across blocks, float64 for the
    sum), i.e. at most about 6.1e-5 · ‖gᵢ‖‖gⱼ‖ for b = 1024 whatever d is, and in practice
    about √b·u ≈ 2e-6 (random rounding). A float32 J itself carries relative errors of order
    u per entry, so the Gramian's own error is within a factor b (worst case) of what the
    Jacobian already had. Where that matters (the min-norm direction ‖Jᵀw‖ is below ~1e-4 ·
    ‖gᵢ‖, i.e. nearly Pareto-stationary with strongly conflicting gradients), use "float64".
    Within that bound the result is projected onto the PSD cone (a singular Gramian of dependent
    objectives rounds to a slightly indefinite one); beyond it, a ``ValueError``
    (:func:`mogradient._psd.project_psd`).
    """
    gram, e = scaled_gramian(jacobian, chunk_size, precision=precision, block_size=block_size)
    if e == 0:
        return gram
    out = times_pow2(gram, -2 * e)
    top = float(gram.diagonal().max())
    if not bool(torch.isfinite(out).all()) or (top > 0 and float(out.diagonal().max()) < _TINY):
        norm = f"1e{(math.log2(top) / 2 - e) * math.log10(2):.0f}"
        raise ValueError(
            f"the Gramian J Jᵀ of this Jacobian is beyond float64's range (its largest gradient "
            f"norm is about {norm}; J Jᵀ is a float64 number for norms between about 2^-511 and "
            "2^511, i.e. 1e-154 to 1e154): call the aggregator on the Jacobian (agg(J) scales "
            "J by a power of two before forming J Jᵀ), or scale the losses by a power of two"
        )
    return out


_TINY = float(torch.finfo(torch.float64).tiny)


def scaled_gramian(
    jacobian: torch.Tensor,
    chunk_size: int = 1 << 20,
    *,
    precision: Literal["float64", "input"] = "float64",
    block_size: int = 1024,
) -> tuple[torch.Tensor, int]:
    """``(G_s, e)`` with ``G_s = (2^e J)(2^e J)ᵀ`` as :func:`gramian_of` forms it: ``e = 0``
    where the unscaled product is finite and its largest diagonal entry is at least 2^-512
    (products in float64) or 2^-64 (in float32), or J's largest entry lies inside 2^±256 or
    2^±32; else ``2^e J`` has its largest entry in [0.5, 1) and the product is formed again.
    The scaling is exact (a power of two), so the Gramian of ``J`` is ``2^(−2e) G_s`` up to the
    product's own rounding; ordinary inputs cost nothing more than the product."""
    if precision not in ("float64", "input"):
        raise ValueError(f"precision must be 'float64' or 'input', got {precision!r}")
    if precision == "float64" or jacobian.dtype == torch.float64:
        work = torch.float64

        def form(e: int) -> torch.Tensor:
            return _gramian_f64(jacobian, chunk_size, e)
    else:
        work = torch.promote_types(jacobian.dtype, torch.float32)

        def form(e: int) -> torch.Tensor:
            return _gramian_blocked(jacobian, chunk_size, block_size, e)

    gram = form(0)
    # In range (finite, largest squared norm ≥ 2^(−2w) where w bounds the unscaled entries):
    # nothing to scale, and the largest entry of J need not be read.
    top = float(gram.diagonal().max())
    if bool(torch.isfinite(gram).all()) and top >= 2.0 ** (-2 * jacobian_window(work)):
        return gram, 0
    e = jacobian_exponent(jacobian, work)
    return (gram, 0) if e == 0 else (form(e), e)


def _gramian_f64(jacobian: torch.Tensor, chunk_size: int, e: int) -> torch.Tensor:
    n, d = jacobian.shape
    gram = torch.zeros(n, n, dtype=torch.float64, device=jacobian.device)
    for start in range(0, d, chunk_size):
        block = times_pow2(jacobian[:, start : start + chunk_size].to(torch.float64), e)
        gram += block @ block.T
    return 0.5 * (gram + gram.T)


def _gramian_blocked(
    jacobian: torch.Tensor, chunk_size: int, block_size: int, e: int
) -> torch.Tensor:
    if block_size < 1:
        raise ValueError(f"block_size must be positive, got {block_size}")
    n, d = jacobian.shape
    gram = torch.zeros(n, n, dtype=torch.float64, device=jacobian.device)
    work = torch.promote_types(jacobian.dtype, torch.float32)
    chunk = max(block_size, chunk_size // block_size * block_size)
    for start in range(0, d, chunk):
        part = jacobian[:, start : start + chunk]
        if part.dtype != work:
            part = part.to(work)
        part = times_pow2(part, e)
        width = part.shape[1]
        full = width // block_size * block_size
        if full:
            # [k, nb, b] -> [nb, k, b] as a strided view (no copy): one batched matmul.
            blocks = part[:, :full].unflatten(1, (full // block_size, block_size)).transpose(0, 1)
            gram += torch.bmm(blocks, blocks.transpose(1, 2)).sum(0, dtype=torch.float64)
        if full < width:
            tail = part[:, full:]
            gram += (tail @ tail.T).to(torch.float64)
    gram = 0.5 * (gram + gram.T)
    return project_psd(gram, symmetric_error2(gram, block_size, work).sqrt())
