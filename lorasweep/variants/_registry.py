"""The registry of variants: taxonomy axes, the ``@register`` decorator and key lookup."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._options import VariantError
from .study import check_study_fields

if TYPE_CHECKING:
    from .base import Variant

__all__ = ["AXES", "get_variant_class", "register", "registry"]

AXES = ("baseline", "rank", "optimization", "initialization", "moe")

_REGISTRY: dict[str, type[Variant]] = {}


def register(cls: type[Variant]) -> type[Variant]:
    """Class decorator: add a variant to the registry under ``cls.key``."""
    if not cls.key or cls.axis not in AXES or not cls.summary:
        raise TypeError(f"{cls.__name__} needs a key, an axis in {AXES} and a summary")
    if cls.key in _REGISTRY and _REGISTRY[cls.key] is not cls:
        raise TypeError(f"variant key {cls.key!r} registered twice")
    if cls.__doc__ is None:
        raise TypeError(f"{cls.__name__}: the math lives in the class docstring")
    check_study_fields(cls)
    _REGISTRY[cls.key] = cls
    return cls


def registry() -> dict[str, type[Variant]]:
    return dict(_REGISTRY)


def get_variant_class(key: str) -> type[Variant]:
    try:
        return _REGISTRY[key]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise VariantError(
            f"unknown variant {key!r}: choose one of {known} (see `lorasweep variants`)"
        ) from None
