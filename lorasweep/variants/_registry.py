"""The registry of variants: taxonomy axes, the ``@register`` decorator and key lookup."""

from __future__ import annotations

from typing import TypeVar

from ..text import did_you_mean
from ._options import VariantError
from ._quant import BASE_TREATMENTS
from .study import check_study_fields

#: A variant class (a subclass of ``base.Variant``: this module sits below ``base``, which
#: imports it, so it names the type without importing it).
_V = TypeVar("_V", bound=type)

__all__ = ["AXES", "get_variant_class", "register", "registry"]

AXES = ("baseline", "rank", "optimization", "initialization", "moe")

_REGISTRY: dict[str, type] = {}


def register(cls: _V) -> _V:
    """Class decorator: add a variant to the registry under ``cls.key``."""
    if not cls.key or cls.axis not in AXES or not cls.summary:
        raise TypeError(f"{cls.__name__} needs a key, an axis in {AXES} and a summary")
    if cls.key in _REGISTRY and _REGISTRY[cls.key] is not cls:
        raise TypeError(f"variant key {cls.key!r} registered twice")
    if cls.__doc__ is None:
        raise TypeError(f"{cls.__name__}: the math lives in the class docstring")
    if getattr(cls, "quantized_base", None) not in BASE_TREATMENTS:
        raise TypeError(f"{cls.__name__}.quantized_base must be one of {', '.join(BASE_TREATMENTS)}")
    check_study_fields(cls)
    _REGISTRY[cls.key] = cls
    return cls


def registry() -> dict[str, type]:
    return dict(_REGISTRY)


def get_variant_class(key: str) -> type:
    try:
        return _REGISTRY[key]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise VariantError(
            f"unknown variant {key!r}{did_you_mean(key, _REGISTRY)}: choose one of {known} "
            "(see `lorasweep variants`)"
        ) from None
