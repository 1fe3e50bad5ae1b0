"""Reading params.yaml, with checks that name the offending param.

Each stage reads only its own section. Stages validate their section before doing any work, so
a bad value fails at once with a message such as ``params: score.K: must be odd, got 4``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from dogiqa import paths
from dogiqa.errors import ParamError


def load_params(path: str | Path | None = None) -> dict[str, Any]:
    """The params file ``path`` (default: params.yaml of the project root)."""
    path = Path(path) if path is not None else paths.params_file()
    shown = paths.show(path)
    if not path.exists():
        raise ParamError(shown, "file not found")
    try:
        params = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ParamError(shown, f"not valid YAML ({exc})") from None
    if not isinstance(params, dict):
        raise ParamError(shown, "top level must be a mapping of sections")
    return params


def section(params: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = params.get(name)
    if not isinstance(value, dict):
        raise ParamError(name, "missing section (or not a mapping)")
    return value


def get(sec: Mapping[str, Any], prefix: str, key: str) -> Any:
    if key not in sec:
        raise ParamError(f"{prefix}.{key}", "missing")
    return sec[key]


def get_int(
    sec: Mapping[str, Any],
    prefix: str,
    key: str,
    minimum: int | None = None,
    maximum: int | None = None,
) -> int:
    value = get(sec, prefix, key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ParamError(f"{prefix}.{key}", f"must be an integer, got {value!r}")
    check_range(f"{prefix}.{key}", value, minimum, maximum)
    return value


def get_float(
    sec: Mapping[str, Any],
    prefix: str,
    key: str,
    minimum: float | None = None,
    maximum: float | None = None,
) -> float:
    value = get(sec, prefix, key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ParamError(f"{prefix}.{key}", f"must be a number, got {value!r}")
    check_range(f"{prefix}.{key}", float(value), minimum, maximum)
    return float(value)


def get_bool(sec: Mapping[str, Any], prefix: str, key: str) -> bool:
    value = get(sec, prefix, key)
    if not isinstance(value, bool):
        raise ParamError(f"{prefix}.{key}", f"must be true or false, got {value!r}")
    return value


def get_str(sec: Mapping[str, Any], prefix: str, key: str) -> str:
    value = get(sec, prefix, key)
    if not isinstance(value, str) or not value:
        raise ParamError(f"{prefix}.{key}", f"must be a non-empty string, got {value!r}")
    return value


def get_choice(sec: Mapping[str, Any], prefix: str, key: str, choices: Iterable[str]) -> str:
    value = get(sec, prefix, key)
    allowed = list(choices)
    if value not in allowed:
        raise ParamError(f"{prefix}.{key}", f"must be one of {allowed}, got {value!r}")
    return value


def get_list(sec: Mapping[str, Any], prefix: str, key: str) -> list[Any]:
    value = get(sec, prefix, key)
    if not isinstance(value, list) or not value:
        raise ParamError(f"{prefix}.{key}", f"must be a non-empty list, got {value!r}")
    return value


def check_range(name: str, value: float, minimum: float | None, maximum: float | None) -> None:
    if minimum is not None and value < minimum:
        raise ParamError(name, f"must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ParamError(name, f"must be <= {maximum}, got {value}")


def check_levels(name: str, k: Any) -> int:
    """K, the number of score levels: an odd integer in 3..9 (a middle level must exist)."""
    if isinstance(k, bool) or not isinstance(k, int):
        raise ParamError(name, f"must be an integer, got {k!r}")
    if not 3 <= k <= 9:
        raise ParamError(name, f"must be between 3 and 9, got {k}")
    if k % 2 == 0:
        raise ParamError(name, f"must be odd (a middle level is needed), got {k}")
    return k
