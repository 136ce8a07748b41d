"""One ``to_dict`` / ``from_dict`` / ``replace`` for the library's configuration dataclasses.

A config is a dataclass validated in ``__post_init__``; :class:`ConfigMixin` gives it a JSON form (tuples as
lists, nested configs as dicts), a constructor from that form that names unknown keys, and ``replace`` that
re-validates (a nested config's changes are merged into it, so ``replace(model={"memory": 4})`` keeps the
model's other fields)."""
from __future__ import annotations

import dataclasses

from .errors import LSR1Error, UnknownNameError


def _jsonable(value):
    if isinstance(value, ConfigMixin):
        return value.to_dict()
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


class ConfigMixin:
    """Mixed into a ``@dataclass`` config. Class attributes: ``config_name`` (for messages) and
    ``ignore_unknown`` (True: ``from_dict`` drops keys it does not know, for cards written by other
    versions; False: they are an error that lists the known keys)."""

    config_name = "config"
    ignore_unknown = False

    def to_dict(self) -> dict:
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, d: dict):
        if not isinstance(d, dict):
            raise LSR1Error(f"a {cls.config_name} must be a JSON object, got {type(d).__name__}")
        fields = dataclasses.fields(cls)
        known = {f.name for f in fields}
        unknown = sorted(set(d) - known)
        if unknown and not cls.ignore_unknown:
            raise LSR1Error(f"unknown {cls.config_name} keys {unknown}; known keys are {sorted(known)}")
        for f in fields:
            # a yes/no field takes JSON true or false only: "false" (a non-empty string) used to turn it on
            if f.name in d and f.type in (bool, "bool") and not isinstance(d[f.name], bool):
                raise LSR1Error(f"{cls.config_name} field {f.name!r} must be true or false, got {d[f.name]!r}")
        return cls(**{k: v for k, v in d.items() if k in known})

    def replace(self, **changes):
        d = self.to_dict()
        for name, change in changes.items():
            current = getattr(self, name, None)
            if isinstance(current, ConfigMixin):
                if not change:
                    continue
                change = {**d[name], **(change.to_dict() if isinstance(change, ConfigMixin) else change)}
            d[name] = change
        return type(self).from_dict(d)


def named_config(table: dict, name: str, overrides: dict, what: str = "preset"):
    """``table[name]()`` (a config factory), with ``overrides`` applied through ``replace`` (validated)."""
    try:
        cfg = table[name]()
    except KeyError:
        raise UnknownNameError(f"unknown {what} {name!r}; choose one of {sorted(table)}") from None
    return cfg.replace(**overrides) if overrides else cfg
