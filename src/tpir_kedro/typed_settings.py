"""One rule for reading a parameter section into a frozen dataclass.

Kedro hands a node ``params:<section>`` as a plain dict. A node that casts ``int(params["x"])``
itself repeats the default, the cast and the error message in every caller, and a misspelt key
silently falls back to the default. Here each section is a dataclass whose annotations are the
types and whose defaults equal the conf (tests read the conf and compare): ``settings_from_dict``
names an unknown key, a missing required one, or a value of the wrong kind as ``section.key``.
Range checks stay with each dataclass (``__post_init__``).

Annotations understood: ``int``, ``float``, ``str``, ``bool``, ``tuple[X, ...]`` (a list in YAML),
``dict[K, V]``, ``X | None``, a nested settings dataclass (a YAML mapping), and ``Any`` (passed as it is).
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from dataclasses import MISSING, fields, is_dataclass
from typing import Any, ClassVar, TypeVar

T = TypeVar("T")


class SectionSettings:
    """Base of a top-level parameter section's dataclass: ``from_dict`` reads ``params:<SECTION>``."""

    SECTION: ClassVar[str]

    @classmethod
    def from_dict(cls, params: Mapping[str, Any] | None):
        return settings_from_dict(cls, params, cls.SECTION)


def settings_from_dict(cls: type[T], params: Mapping[str, Any] | None, section: str) -> T:
    """``cls`` built from the section's dict (None: every default)."""
    return cls(**typed_values(cls, params, section))


def typed_values(cls: type, params: Mapping[str, Any] | None, section: str) -> dict[str, Any]:
    """``params`` checked against ``cls``' fields and cast to their annotated types."""
    if params is not None and not isinstance(params, Mapping):
        raise ValueError(f"{section} must be a mapping of settings, got {params!r}")
    params = dict(params or {})
    known = [f.name for f in fields(cls)]
    unknown = set(params) - set(known)
    if unknown:
        raise ValueError(f"{section}: unknown key(s) {sorted(unknown)}; known: {sorted(known)}")
    required = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]
    missing = [name for name in required if name not in params]
    if missing:
        raise ValueError(f"{section}: missing required key(s) {missing}")
    hints = typing.get_type_hints(cls)
    return {name: _cast(hints[name], params[name], f"{section}.{name}") for name in known if name in params}


def _cast(kind: Any, value: Any, where: str) -> Any:
    if kind is Any:
        return value
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        for option in options[:-1]:  # the first kind the value fits, in the order written
            try:
                return _cast(option, value, where)
            except ValueError:
                continue
        return _cast(options[-1], value, where)
    if is_dataclass(kind):
        if not isinstance(value, Mapping):
            raise ValueError(f"{where} must be a mapping of settings, got {value!r}")
        return settings_from_dict(kind, value, where)
    if origin is tuple:
        if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, (list, tuple)):
            raise ValueError(f"{where} must be a list, got {value!r}")
        return tuple(_cast(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ValueError(f"{where} must be a mapping, got {value!r}")
        key_kind, value_kind = args
        return {_cast(key_kind, k, where): _cast(value_kind, v, f"{where}.{k}") for k, v in value.items()}
    return _scalar(kind, value, where)


def _scalar(kind: type, value: Any, where: str) -> Any:
    # bool is an int in Python and None casts to "None": neither is accepted where a number or a
    # name is meant. Text is cast because `kedro run --params` may hand numbers over as text.
    wrong = ValueError(f"{where} must be {kind.__name__}, got {value!r}")
    if value is None or (isinstance(value, bool) and kind is not bool):
        raise wrong
    if kind is bool:
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if not isinstance(value, bool):
            raise wrong
        return value
    if kind is str:
        if not isinstance(value, (str, int, float)):
            raise wrong
        return str(value)
    if kind is int and isinstance(value, float) and not value.is_integer():
        raise wrong
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise wrong from None


def require_at_least(section: str, settings: Any, floor: float, *keys: str) -> None:
    """Range check for a ``__post_init__``: each ``settings.key`` ≥ ``floor``, else named."""
    for key in keys:
        if getattr(settings, key) < floor:
            raise ValueError(f"{section}.{key} must be at least {floor:g}, got {getattr(settings, key)}")


def require_positive(section: str, settings: Any, *keys: str) -> None:
    for key in keys:
        if not getattr(settings, key) > 0:
            raise ValueError(f"{section}.{key} must be positive, got {getattr(settings, key)}")
