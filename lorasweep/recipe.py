"""Reading a recipe file: YAML text -> a plain mapping (validated later, with the CLI's flags)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ._values import ConfigError

__all__ = ["load_recipe"]


def load_recipe(path: str | Path) -> dict[str, Any]:
    """Read a recipe YAML into a plain mapping (validated later, with the CLI's flags)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise _error(f"cannot read recipe {str(path)!r}: {err.strerror}; check the path") from None
    except UnicodeDecodeError as err:
        raise _error(f"recipe {str(path)!r} is not UTF-8 text (byte {err.start}): "
                     "save it as UTF-8") from None
    except yaml.YAMLError as err:
        line = getattr(getattr(err, "problem_mark", None), "line", None)
        where = f" at line {line + 1}" if line is not None else ""
        raise _error(f"recipe {str(path)!r} is not valid YAML{where}: fix the syntax") from None
    if not isinstance(data, dict):
        raise _error(f"recipe {str(path)!r} must be a YAML mapping of sweep settings")
    return data


def _error(message: str) -> Exception:
    return ConfigError(message)
