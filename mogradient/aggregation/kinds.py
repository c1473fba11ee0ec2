"""The four kinds of aggregation method, as base classes, by the data each decides from.

* :class:`GramianWeighting` — loss weights from the k×k Gramian ``G = J Jᵀ`` of the objectives'
  gradients (MGDA, PCGrad, CAGrad, UPGrad, ...). Stateful methods (GradVac's EMA, a warm start)
  keep their state in the object and clear it in :meth:`Aggregator.reset`.
* :class:`LossWeighting` — loss weights from the current loss values and, where the method
  needs it, their history (linear, mean, DWA, FAMO, STCH, ...): a scalarizer, trained with one
  backward of ``Σ wᵢ Lᵢ``.
* :class:`AdvantageCombiner` — one combined coefficient per sample from per-sample, per-objective
  coefficients under a mask (PAMA on RL advantages).
* :class:`JacobianWeighting` — a direction from the k×d Jacobian itself, with state kept in the
  gradients' space across steps (ExcessMTL, DB-MTL, MoCo).

Weighting (statistics → weights) is kept apart from combining (weights → direction or
``Σ wᵢ Lᵢ``): a Gramian method never needs more than the k×k Gramian to decide. Deciding is
never differentiated: weights and directions come out of ``torch.no_grad()``, as in TorchJD.
:func:`mogradient.aggregation.dispatch.dispatch` is the one place that switches on the kind.

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

from mogradient.aggregation._scale import (
    GRAMIAN_WINDOW,
    combine,
    even_exponent_into_range,
    times_pow2,
)
from mogradient.aggregation.gramian import scaled_gramian
from mogradient.aggregation.inputs import check_gramian, check_jacobian, check_loss_values
from mogradient.solvers.validation import CheckedGramian

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

    Subclass one of the four kinds below, not this class.
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
    #: Whether the method decides from ``J₁ J₂ᵀ`` of two independent mini-batches (MoDo,
    #: SDMGrad: :class:`~mogradient.aggregation.cross_gramian.CrossGramianWeighting`):
    #: ``mogradient.backward`` then needs ``second_losses=``, and the RL loss refuses it.
    needs_two_batches: ClassVar[bool] = False
    #: Non-default hyper-parameter settings the contract test checks besides the defaults (the
    #: drawn preference and another seed are added from the facts above). A value
    #: ``DRAWN_PREFERENCE`` / ``DRAWN_SPARSE_PREFERENCE`` (``mogradient.aggregation.preference``)
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

    def _checked_into(self, address: int, n: int, out: int) -> bool:
        """Write the weights of the C-contiguous float64 ``n × n`` Gramian at ``address`` to
        the ``n`` float64 entries at ``out``, validated and solved in one compiled call
        (:mod:`mogradient.solvers.checked`), equal to the general path's; or return False
        where the general path must decide (a failed check, a Gramian to rescale, a method or
        setting without such a call: the default)."""
        return False

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
        # The largest diagonal entry via a list: np.max on the ndarray subclass costs ~10 µs
        # (its __array_wrap__ per ufunc), and the Gramian is finite (validated).
        k = even_exponent_into_range(
            max(gramian.view(np.ndarray).diagonal().tolist()), GRAMIAN_WINDOW
        )
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
        # Every call runs between a forward and a backward ("cold"): the common case (a float64
        # CPU tensor in range) goes straight to one compiled validate-and-solve call; the
        # general path touches as little as it can (no errstate when nothing is rescaled, no
        # torch.device object).
        if (
            losses is None
            and type(gramian) is torch.Tensor
            and gramian.dtype is torch.float64
            and gramian.is_cpu
            and not gramian.requires_grad
        ):
            shape = gramian.shape
            if len(shape) == 2 and (n := shape[0]) == shape[1] != 0 and gramian.is_contiguous():
                # By address: Tensor.numpy() and torch.from_numpy cost more than the solve. A
                # lazily negated view (is_neg()) holds -G there: it fails validation (negative
                # diagonal) unless G is zero (then -G = G), and the general path raises.
                out = gramian.new_empty(n)  # float64, CPU, no grad: as the Gramian
                if self._checked_into(gramian.data_ptr(), n, out.data_ptr()):
                    return out
        g = check_gramian(gramian)
        values = None
        if losses is not None or self.uses_loss_values:
            values = self._loss_values(g.shape[0], losses)
        v, t = self._scaled_weights(g, values, 0)
        w = v
        if t:
            with np.errstate(over="ignore", under="ignore"):
                w = times_pow2(v, t)
            if np.isfinite(v).all() and not np.isfinite(w).all():
                raise ValueError(
                    f"the weights of {self!r} for this Gramian (largest diagonal entry "
                    f"{float(np.max(np.diagonal(g))):.3g}) are beyond float64's range; call the "
                    "method on the Jacobian instead (agg(J) returns the direction, which is in "
                    "range)"
                )
        if isinstance(gramian, torch.Tensor):
            # from_numpy shares w's memory as as_tensor would, without its dispatch (~5 µs).
            out = torch.from_numpy(np.ascontiguousarray(w, dtype=np.float64))
            return out if gramian.is_cpu else out.to(gramian.device)
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


class JacobianWeighting(Aggregator):
    """A direction decided from the k×d Jacobian itself (and, for the methods that read them,
    the loss values), with state kept in the gradients' space across steps: an EMA of each
    objective's gradient, an AdaGrad accumulator of squared gradients (ExcessMTL, DB-MTL, MoCo).

    What the other kinds cannot express: a k×k Gramian forgets which coordinates its gradients
    had, so a running statistic of the gradient vectors needs the Jacobian; and the direction may
    mix in past gradients, so it need not be ``Σ wᵢ gᵢ`` of this step's gradients. Training
    therefore needs the Jacobian over the parameters (``mogradient.backward``'s parameter mode;
    in the RL loop ``gramian_level="parameters"`` with ``parameter_gramian="jacobian"``), and
    the state costs memory of the Jacobian's size. The state lives in the Jacobian's dtype and
    on its device; a Jacobian of another shape is refused until :meth:`reset`.

    Subclasses implement :meth:`_direction`; methods that read the loss values set
    ``uses_loss_values = True``.
    """

    #: Whether :meth:`_direction` reads the loss values (then ``agg(J, losses)`` needs them).
    uses_loss_values: ClassVar[bool] = False

    @abstractmethod
    def _direction(self, jacobian: torch.Tensor, losses: np.ndarray | None) -> torch.Tensor:
        """The direction ``[d]`` in the Jacobian's dtype for a validated, detached Jacobian
        ``[n, d]`` and, for methods with ``uses_loss_values``, validated float64 loss values
        ``[n]``; advances the method's state."""

    def _check_state(self, held: torch.Tensor | None, jacobian: torch.Tensor) -> None:
        """Refuse a Jacobian whose shape differs from the state's ``held`` (``None``: no state)."""
        if held is not None and held.shape != jacobian.shape:
            raise ValueError(
                f"{self!r} holds state for a {held.shape[0]}x{held.shape[1]} Jacobian and got "
                f"a {jacobian.shape[0]}x{jacobian.shape[1]} one; call reset() before changing "
                "the number of objectives or parameters"
            )

    def __call__(self, jacobian: torch.Tensor, losses: torch.Tensor | None = None) -> torch.Tensor:
        jacobian = check_jacobian(jacobian)
        values = None
        if losses is None and self.uses_loss_values:
            raise ValueError(
                f"{self!r} decides from the Jacobian and the loss values; call it as "
                "agg(jacobian, losses=...) with one loss value per row of the Jacobian"
            )
        if losses is not None:
            values = check_loss_values(losses)
            if values.shape[0] != jacobian.shape[0]:
                raise ValueError(
                    f"got {values.shape[0]} loss values for a Jacobian with "
                    f"{jacobian.shape[0]} rows; pass one loss value per objective"
                )
        with torch.no_grad():
            return self._direction(jacobian.detach(), values if self.uses_loss_values else None)
