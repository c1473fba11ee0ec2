"""The string registry: names, aliases, errors that list what is valid, readable reprs."""

from __future__ import annotations

import pytest

import mogradient
from mogradient import get_aggregator


def test_names_are_sorted_and_cover_the_methods() -> None:
    names = mogradient.available_aggregators()
    assert names == sorted(names)
    assert {"pama", "mgda", "pcgrad", "cagrad", "linear", "morlhf", "mean"} <= set(names)


def test_alias_and_normalised_spelling() -> None:
    assert type(get_aggregator("morlhf")) is type(get_aggregator("linear"))
    assert type(get_aggregator(" MGDA ")) is mogradient.MGDA


def test_unknown_name_lists_valid_ones_and_suggests() -> None:
    with pytest.raises(ValueError, match=r"Did you mean 'pcgrad'.*Valid names: .*cagrad.*linear"):
        get_aggregator("pcgard")


def test_bad_keyword_lists_accepted_ones() -> None:
    with pytest.raises(TypeError, match=r"unexpected hyper-parameter\(s\) \['alpha'\].*accepts: c"):
        get_aggregator("cagrad", alpha=0.5)
    with pytest.raises(TypeError, match="accepts: none"):
        get_aggregator("mean", weights=[1, 1])


def test_instance_passes_through() -> None:
    agg = mogradient.CAGrad(c=0.1)
    assert get_aggregator(agg) is agg
    with pytest.raises(TypeError, match="instance"):
        get_aggregator(agg, c=0.2)
    with pytest.raises(TypeError, match="name or an Aggregator"):
        get_aggregator(3)


@pytest.mark.parametrize(
    ("name", "kwargs", "text"),
    [
        ("cagrad", {"c": 0.5}, "CAGrad(c=0.5)"),
        ("linear", {"preference": [0.3, 0.7]}, "Linear(preference=[0.3, 0.7])"),
        ("morlhf", {}, "Linear(preference=None)"),
        ("mean", {}, "Mean()"),
        ("mgda", {"warm_start": True}, "MGDA(warm_start=True)"),
        ("pcgrad", {"seed": 3}, "PCGrad(seed=3)"),
        ("pama", {}, "PAMA(granularity='token')"),
    ],
)
def test_repr(name: str, kwargs: dict, text: str) -> None:
    assert repr(get_aggregator(name, **kwargs)) == text


@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    [
        ("cagrad", {"c": -0.1}, "c must be"),
        ("cagrad", {"c": float("nan")}, "c must be"),
        ("linear", {"preference": [0.5, -0.5]}, "non-negative"),
        ("linear", {"preference": [0.0, 0.0]}, "not be all zero"),
        ("linear", {"preference": []}, "non-empty"),
        ("linear", {"preference": [[1.0, 2.0]]}, "1-D"),
        ("pcgrad", {"seed": -1}, "seed"),
    ],
)
def test_invalid_hyperparameters(name: str, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        get_aggregator(name, **kwargs)


def test_mgda_warm_start_must_be_bool() -> None:
    with pytest.raises(TypeError, match="warm_start"):
        get_aggregator("mgda", warm_start="yes")


def test_every_method_has_a_docs_page_and_the_index_is_current() -> None:
    from pathlib import Path

    from mogradient.aggregators.__main__ import index

    docs = Path(__file__).resolve().parents[1] / "docs" / "aggregators"
    missing = [n for n in mogradient.registered() if not (docs / f"{n}.md").is_file()]
    assert not missing, f"write docs/aggregators/<name>.md for {missing}"
    assert (docs / "index.md").read_text() == index(), (
        "docs/aggregators/index.md is stale: run "
        "python -m mogradient.aggregators > docs/aggregators/index.md"
    )


def test_registered_classes_are_attributes_of_the_package() -> None:
    for cls in mogradient.registered().values():
        assert getattr(mogradient, cls.__name__) is cls
        assert getattr(mogradient.aggregators, cls.__name__) is cls
    with pytest.raises(AttributeError, match="NotAMethod"):
        _ = mogradient.NotAMethod


def test_the_jacobian_weightings_are_registered() -> None:
    """ExcessMTL, DB-MTL and MoCo: the fourth kind's methods, by their names and aliases."""
    for name, alias in [("excess-mtl", "excessmtl"), ("db-mtl", "dbmtl"), ("moco", None)]:
        cls = mogradient.registered()[name]
        assert issubclass(cls, mogradient.JacobianWeighting)
        if alias is not None:
            assert type(get_aggregator(alias)) is cls
