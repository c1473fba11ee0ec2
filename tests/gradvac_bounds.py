"""First-order rounding bounds of GradVac's steps (and PCGrad's, its β = 0 case): how far two
float64 evaluations of the same steps, one of them with TorchJD's ``eps``, may differ.

Used by ``tests/test_agg_gradvac.py`` against Algorithm 1 on explicit vectors, TorchJD and
explicit PCGrad projections.
"""

from __future__ import annotations

import numpy as np
import torch

from tests.bounds import U64, gamma, matvec_bound


def steps_on_gramians(
    grams: list[torch.Tensor],
    orders: list[np.ndarray],
    beta: float,
    eps: torch.Tensor | None = None,
    seen: list[float] | None = None,
) -> torch.Tensor:
    """The steps' weights and targets (concatenated) as a differentiable function of the
    steps' Gramians, Algorithm 1 written on G (used only for its derivative), with TorchJD's
    ``eps`` added to the cosine's and the correction's denominators where ``eps`` is given.
    ``seen`` collects each comparison's |φ − φ̂| and each denominator, relative to eps's
    scale (to check that eps neither flips a comparison nor is large next to a denominator)."""
    shift = torch.zeros((), dtype=torch.float64) if eps is None else eps
    n = grams[0].shape[0]
    phi_hat = torch.zeros((n, n), dtype=torch.float64)
    out = []
    for g, order in zip(grams, orders, strict=True):
        total = torch.zeros(n, dtype=torch.float64)
        for i in range(n):
            coef = torch.eye(n, dtype=torch.float64)[i]
            for j in (int(j) for j in order[i] if j != i):
                norm_i2 = coef @ g @ coef
                if g[j, j] == 0 or norm_i2 <= 0:
                    continue
                norm_i, norm_j = norm_i2.sqrt(), g[j, j].sqrt()
                phi = (coef @ g[:, j]) / (norm_i * norm_j + shift)
                target = phi_hat[i, j]
                if seen is not None:
                    seen += [abs(float(phi - target)), float(norm_i * norm_j)]
                if phi < target and abs(float(target.detach())) < 1:
                    sin_t = (1 - target**2).sqrt()
                    denom = norm_j * sin_t + shift
                    if seen is not None:
                        seen.append(float(norm_j * sin_t))
                    w = norm_i * (target * (1 - phi**2).sqrt() - phi * sin_t) / denom
                    coef = coef + w * torch.eye(n, dtype=torch.float64)[j]
                phi_hat = phi_hat.index_put(
                    (torch.tensor(i), torch.tensor(j)), (1 - beta) * target + beta * phi
                )
            total = total + coef
        out += [total, phi_hat.reshape(-1)]
    return torch.cat(out)


def first_order_bound(
    jacs: list[torch.Tensor], orders: list[np.ndarray], beta: float, eps: float = 0.0
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Bounds on |Δw| and |Δφ̂| at each step between two float64 evaluations of GradVac, one
    of them with TorchJD's ``eps`` in its denominators.

    Each evaluation is, to first order, exact for Gramians G + ΔG with
    |ΔGₖₗ| ≤ γ_K‖gₖ‖‖gₗ‖, K = 4(d + n) + 64: the length-d dot products of the Gramian or of
    the explicit vectors, the length-n sums C G Cᵀ and (C G)ᵢⱼ accumulated over n corrections,
    and the scalar work of each correction (a cosine, two square roots, a quotient: a
    relative error of a few u in φ is such a ΔG), with a margin. So they differ by at most
    2γ_K Σₖₗ |∂out/∂Gₖₗ|‖gₖ‖‖gₗ‖, the derivative taken by autograd through every step so far
    (the targets carry over).

    ``eps`` shifts two denominators, each at least 10⁴·eps here (checked by
    ``eps_is_a_perturbation``): out(eps) − out(0) = eps·∂out/∂eps + O(eps²·∂²out), and the
    second-order term is at most (eps / smallest denominator) ≤ 10⁻⁴ of the first times the
    number of steps a target carries it, so 2·eps·|∂out/∂eps| bounds the difference."""
    n, d = jacs[0].shape
    grams = [(j @ j.T).detach() for j in jacs]
    sizes = torch.cat([torch.outer(g.diagonal(), g.diagonal()).sqrt().reshape(-1) for g in grams])
    flat = torch.cat([g.reshape(-1) for g in grams] + [torch.zeros(1, dtype=torch.float64)])

    def f(x: torch.Tensor) -> torch.Tensor:
        stacked = x[:-1].reshape(len(grams), n, n)
        return steps_on_gramians(list(stacked), orders, beta, eps=x[-1])

    jac_out = torch.autograd.functional.jacobian(f, flat, vectorize=True)
    rounding = 2 * gamma(4 * (d + n) + 64, U64) * (jac_out[:, :-1].abs() @ sizes)
    bound = (rounding + 2 * eps * jac_out[:, -1].abs()).split(n + n * n)
    return [(b[:n], b[n:].reshape(n, n)) for b in bound]


def eps_is_a_perturbation(
    jacs: list[torch.Tensor], orders: list[np.ndarray], beta: float, eps: float
) -> None:
    """The premises of the eps term in ``first_order_bound``: every denominator is at least
    10⁴·eps, and no comparison φ < φ̂ is within 10⁴·eps of flipping (eps moves φ by at most
    eps/denominator ≤ 10⁻⁴, far less)."""
    seen: list[float] = []
    with torch.no_grad():
        steps_on_gramians([(j @ j.T) for j in jacs], orders, beta, seen=seen)
    assert min(seen) >= 1e4 * eps, min(seen)


class Steps:
    """The steps of one aggregator next to a reference's, checked together against the bounds
    of first_order_bound: directions to |Δw|ᵀ|J| plus both products' rounding
    (2·matvec_bound, 2n roundings a term for the reference's n corrections), targets to
    |Δφ̂| plus the EMA's rounding (4u·max(1, |φ̂|))."""

    def __init__(self, beta: float, eps: float = 0.0) -> None:
        self.beta = beta
        self.eps = eps
        self.jacs: list[torch.Tensor] = []
        self.orders: list[np.ndarray] = []
        self.pairs: list[tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray]] = []

    def add(
        self,
        jac: torch.Tensor,
        order: np.ndarray,
        ours: object,
        expected: object,
        phi_ours: np.ndarray,
        phi_expected: np.ndarray,
    ) -> None:
        self.jacs.append(jac)
        self.orders.append(order)
        self.pairs.append(
            (torch.as_tensor(ours), torch.as_tensor(expected), phi_ours.copy(), phi_expected.copy())
        )

    def check(self, weights_of: list[torch.Tensor]) -> None:
        if self.eps:
            eps_is_a_perturbation(self.jacs, self.orders, self.beta, self.eps)
        bounds = first_order_bound(self.jacs, self.orders, self.beta, self.eps)
        for jac, w, (dw, dphi), (ours, expected, phi_ours, phi_expected) in zip(
            self.jacs, weights_of, bounds, self.pairs, strict=True
        ):
            rounding = 2 * matvec_bound(w, jac, roundings=2 * jac.shape[0])
            dir_bound = dw @ jac.abs() + rounding
            err = (ours - expected).abs()
            assert bool((err <= dir_bound).all()), float((err / dir_bound).max())
            phi_bound = dphi.numpy() + 4 * U64 * np.maximum(1.0, np.abs(phi_expected))
            phi_err = np.abs(phi_ours - phi_expected)
            assert bool((phi_err <= phi_bound).all()), float((phi_err / phi_bound).max())
