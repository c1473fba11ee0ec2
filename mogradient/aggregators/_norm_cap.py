"""The norm cap of FairGrad and Nash-MTL (private: the registry skips it): ``max_norm``, the
largest norm their update is scaled down to, as the reference code clips it."""

from __future__ import annotations

from mogradient.aggregation.checks import positive_number


def check_max_norm(max_norm: float | None) -> float | None:
    """``None`` (no clipping) or a finite number > 0."""
    if max_norm is None:
        return None
    return positive_number(
        "max_norm",
        max_norm,
        "max_norm=0 would zero every update; pass max_norm=None to disable the clipping "
        "(the reference code and TorchJD use 0 for that)",
        also=" or None",
    )
