"""Readable, stable names for variant configurations (study names and run folders)."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

__all__ = ["variant_tag"]

_TAG_MAX = 64
_SAFE = re.compile(r"[A-Za-z0-9._+=-]*")


def _option_part(name: str, value: Any) -> str:
    """``ratio=8.0`` -> ``ratio8``; booleans as ``name`` / ``no-name``; text as ``name=value``."""
    name = name.rstrip("_")
    if isinstance(value, bool):
        return name if value else f"no-{name}"
    if isinstance(value, (int, float)):
        return f"{name}{value:g}"
    if isinstance(value, (list, tuple)):
        return f"{name}=" + "+".join(str(v) for v in value)
    return f"{name}={value}"


def variant_tag(key: str, rank: int, alpha: float, dropout: float, options: dict[str, Any],
                targets: list[str] | None) -> str:
    """``lora-r8-a16``, ``loraplus-r8-a16-ratio8``, ``lora-r8-a16-t=query+value``.

    The options named are the ones given that differ from the variant's defaults (the caller
    resolves them first). Where the named options would make the tag longer than 64 characters,
    or a value holds characters a folder name should not carry, an 8-character hash of them
    stands in their place.
    """
    tag = f"{key}-r{rank}-a{alpha:g}"
    if dropout:
        tag += f"-d{dropout:g}"
    parts = [_option_part(k, v) for k, v in sorted(options.items())]
    if targets:
        parts.append("t=" + "+".join(sorted(targets)))
    extra = "-".join(parts)
    if extra and (len(tag) + 1 + len(extra) > _TAG_MAX or not _SAFE.fullmatch(extra)):
        payload = {"options": options, "targets": sorted(targets or [])}
        extra = hashlib.sha1(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:8]
    return f"{tag}-{extra}" if extra else tag
