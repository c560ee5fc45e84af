"""How a setting is declared once and then read, checked and documented from that declaration.

A settings section is a frozen dataclass whose fields are made with `setting(default, doc)`.
From the fields alone this module reads a TOML table, the `OMNI_LEDGER_<SECTION>_<KEY>`
environment variables and command-line overrides, and writes the configuration reference.
The annotation says how a value is read:

    int, float, bool, str, Path      TOML values of that kind (a path is a string)
    Path | None                      a path; an empty string is None
    timedelta                        '500ms', '2s', '15m', '24h', '7d' or a number of seconds
    Secret                           a string that never shows in repr or logs
    tuple[str | Path | Secret, ...]  one string split at the field's `sep`
    Literal['a', 'b']                one of the choices
    Mapping[str, X]                  a TOML table of X (file only: the environment holds scalars)

A section checks itself in `__post_init__` and reports with `invalid(key, expected, got)`:
the loader adds the section and where the value came from (defaults, the file, the
environment, the command line), so an error reads `kafka.port (environment): expected ...`.
"""

from __future__ import annotations

import re
import types
from collections.abc import Iterator, Mapping
from copy import copy
from dataclasses import MISSING, dataclass, field, fields, replace
from datetime import timedelta
from functools import cache
from pathlib import Path
from typing import Any, Literal, NoReturn, TypeVar, get_args, get_origin, get_type_hints

from ledger.errors import ConfigError

__all__ = [
    "Given",
    "Invalid",
    "Secret",
    "apply",
    "env_name",
    "environment_values",
    "file_values",
    "format_duration",
    "invalid",
    "parse_duration",
    "reference",
    "setting",
]

T = TypeVar("T")

_UNITS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_TRUE = frozenset({"1", "true", "yes", "on"})
_PREFIX = "OMNI_LEDGER"


def setting(default: T, doc: str, *, sep: str = "") -> T:
    """One setting: its default and its doc, the line the configuration reference shows.

    `sep` splits a tuple given as one string (`"a;b"`), in the file as in the environment.
    """
    meta = {"doc": doc, "sep": sep}
    if type(default).__hash__ is None:  # a dict: each instance gets its own copy
        return field(default_factory=lambda: copy(default), metadata=meta)
    return field(default=default, metadata=meta)


def parse_duration(value: object, where: str) -> timedelta:
    """'500ms', '2s', '15m', '24h', '7d' (or a number of seconds) as a timedelta."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * _UNITS[match.group(2)] / 1000
    else:
        msg = f"{where}: expected a duration like '500ms', '2s', '15m', '24h' or '7d', got {value!r}"
        raise ConfigError(msg)
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    """A duration as `parse_duration` reads it, in the largest unit that divides it: '24h', '500ms'."""
    millis = round(value.total_seconds() * 1000)
    for unit in ("d", "h", "m", "s"):
        # '24h' reads better than '1d'; days from two on ('7d').
        if millis and millis % _UNITS[unit] == 0 and (unit != "d" or millis >= 2 * _UNITS["d"]):
            return f"{millis // _UNITS[unit]}{unit}"
    return f"{millis}ms"


class Secret:
    """A value that never shows in `repr` or logs."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The value itself, for the one client that needs it."""
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __repr__(self) -> str:
        return "Secret('***')" if self._value else "Secret('')"


class Invalid(ConfigError):
    """A section's own check failed; the loader names the section and the value's origin."""

    def __init__(self, keys: tuple[str, ...], detail: str) -> None:
        self.keys, self.detail = keys, detail
        super().__init__(f"{' / '.join(keys)}: {detail}")


def invalid(key: str | tuple[str, ...], expected: str, got: object) -> NoReturn:
    """Refuse a value in a section's `__post_init__`: `key` within the section, what was expected, what came."""
    raise Invalid((key,) if isinstance(key, str) else key, f"expected {expected}, got {got!r}")


@dataclass(frozen=True, slots=True)
class _Kind:
    """How one annotation reads a value."""

    hint: Any
    sep: str

    def read(self, value: object, where: str, *, variable: str = "") -> Any:
        """`value` as this kind; `variable` names the environment variable it came from, if it did."""
        from_env = bool(variable)
        hint = self.hint
        if get_origin(hint) is tuple:
            item = _Kind(get_args(hint)[0], "")
            text = self._string(value, where)
            return tuple(item.read(part.strip(), where) for part in text.split(self.sep) if part.strip())
        if get_origin(hint) in (Mapping, dict):
            if not isinstance(value, Mapping):
                _fail(where, "a table", value)
            item = _Kind(get_args(hint)[1], "")
            return {k: item.read(v, f"{where}[{k!r}]") for k, v in value.items()}
        if get_origin(hint) is Literal:
            choices = get_args(hint)
            if self._string(value, where) not in choices:
                _fail(where, f"one of {', '.join(choices)}", value)
            return value
        if get_origin(hint) is types.UnionType:  # Path | None: an empty path is None
            text = self._string(value, where)
            return Path(text) if text.strip() else None
        if hint is bool:
            if from_env:
                return self._string(value, where).strip().lower() in _TRUE
            if not isinstance(value, bool):
                _fail(where, "true or false", value)
            return value
        if hint in (int, float):
            number, expected = (int, "an integer") if hint is int else (float, "a number")
            if from_env:
                try:
                    return number(self._string(value, where))
                except ValueError:
                    _fail(f"{variable} (environment)", expected, value)
            # A TOML float is no integer; an integer is a number.
            if isinstance(value, bool) or not isinstance(value, int if hint is int else int | float):
                _fail(where, expected, value)
            return number(value)
        if hint is timedelta:
            return parse_duration(value, where)
        if hint is Path:
            return Path(self._string(value, where))
        if hint is Secret:
            return Secret(self._string(value, where))
        return self._string(value, where)

    @staticmethod
    def _string(value: object, where: str) -> str:
        if not isinstance(value, str):
            _fail(where, "a string", value)
        return value

    def describe(self) -> str:
        """The kind of value, as the reference shows it."""
        hint = self.hint
        if get_origin(hint) is tuple:
            return f"list of {_Kind(get_args(hint)[0], '').describe()}, separated by `{self.sep}`"
        if get_origin(hint) in (Mapping, dict):
            return f"table of {_Kind(get_args(hint)[1], '').describe()}"
        if get_origin(hint) is Literal:
            return " \\| ".join(f"`{choice}`" for choice in get_args(hint))
        if get_origin(hint) is types.UnionType:
            return "path (empty: none)"
        names = {bool: "true/false", int: "integer", float: "number", timedelta: "duration", Path: "path"}
        return names.get(hint, "secret" if hint is Secret else "string")


_SUPPORTED = (bool, int, float, str, timedelta, Path, Secret)


def _fail(where: str, expected: str, got: object) -> NoReturn:
    msg = f"{where}: expected {expected}, got {got!r}"
    raise ConfigError(msg)


@cache
def _kinds(section: type) -> dict[str, _Kind]:
    """Each field of a section with how it is read; an annotation the loader cannot read is a bug here."""
    hints = get_type_hints(section)
    kinds = {}
    for spec in fields(section):
        hint = hints[spec.name]
        origin = get_origin(hint)
        leaf = get_args(hint)[0] if origin in (tuple, types.UnionType) else hint
        if origin in (Mapping, dict) or get_origin(leaf) is Literal or leaf in _SUPPORTED:
            kinds[spec.name] = _Kind(hint, spec.metadata.get("sep", ""))
        else:
            msg = f"{section.__name__}.{spec.name}: the loader cannot read {hint!r}"
            raise TypeError(msg)
    return kinds


def _sections(root: type) -> dict[str, Any]:
    """The root's sections by TOML table name: a section dataclass, or the hint of a free table."""
    hints = get_type_hints(root)
    return {spec.name: hints[spec.name] for spec in fields(root)}


def _is_table(hint: Any) -> bool:
    return get_origin(hint) in (Mapping, dict)


# section -> key -> (value, where it came from)
Given = dict[str, dict[str, tuple[Any, str]]]


def file_values(doc: Mapping[str, Any], origin: str, root: type) -> Given:
    """The values of a parsed TOML document, each read by its field's type; unknown names are refused."""
    sections = _sections(root)
    for name, value in doc.items():
        if name not in sections:
            msg = f"unknown section [{name}] ({origin}); expected one of {', '.join(sections)}"
            raise ConfigError(msg)
        if not isinstance(value, dict):
            msg = f"[{name}] ({origin}) must be a table"
            raise ConfigError(msg)
    given: Given = {}
    for name, table in doc.items():
        hint = sections[name]
        if _is_table(hint):  # a free table such as [sites]: its keys are data
            item = _Kind(get_args(hint)[1], "")
            given[name] = {k: (item.read(v, f"{name}.{k} ({origin})"), origin) for k, v in table.items()}
            continue
        kinds = _kinds(hint)
        if unknown := sorted(set(table) - set(kinds)):
            msg = f"unknown key {name}.{unknown[0]} ({origin}); expected one of {', '.join(sorted(kinds))}"
            raise ConfigError(msg)
        given[name] = {
            key: (kinds[key].read(value, f"{name}.{key} ({origin})"), origin) for key, value in table.items()
        }
    return given


def env_name(section: str, key: str) -> str:
    """The environment variable of one setting: OMNI_LEDGER_<SECTION>_<KEY>."""
    return f"{_PREFIX}_{section}_{key}".upper()


def _scalars(root: type) -> Iterator[tuple[str, str, _Kind]]:
    for name, hint in _sections(root).items():
        if not _is_table(hint):
            for key, kind in _kinds(hint).items():
                if not _is_table(kind.hint):
                    yield name, key, kind


def environment_values(environ: Mapping[str, str], root: type) -> Given:
    """The values of the OMNI_LEDGER_* variables set in `environ` (scalar settings only)."""
    given: Given = {}
    for section, key, kind in _scalars(root):
        name = env_name(section, key)
        if name in environ:
            value = kind.read(environ[name], f"{section}.{key} (environment)", variable=name)
            given.setdefault(section, {})[key] = (value, "environment")
    return given


def apply(base: T, *layers: Given) -> T:
    """`base` with each layer's values applied in turn; each changed section is built (and checked) once."""
    merged: Given = {}
    for layer in layers:
        for section, values in layer.items():
            merged.setdefault(section, {}).update(values)
    changes: dict[str, Any] = {}
    for section, values in merged.items():
        current = getattr(base, section)
        if isinstance(current, Mapping):
            changes[section] = {**current, **{k: v for k, (v, _) in values.items()}}
            continue
        try:
            changes[section] = replace(current, **{k: v for k, (v, _) in values.items()})
        except Invalid as exc:
            origins = list(dict.fromkeys(values[k][1] for k in exc.keys if k in values)) or ["defaults"]
            keys = " / ".join(f"{section}.{k}" for k in exc.keys)
            msg = f"{keys} ({' + '.join(origins)}): {exc.detail}"
            raise ConfigError(msg) from exc
    return replace(base, **changes) if changes else base  # type: ignore[type-var]


def _default(spec: Any) -> object:
    return spec.default_factory() if spec.default is MISSING else spec.default


def _shown(value: object) -> str:
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, timedelta):
        return f'`"{format_duration(value)}"`'
    if isinstance(value, int | float):
        return f"`{value}`"
    if value is None or value == () or value == {} or value == Secret("") or value == "":
        return '`""`' if not isinstance(value, Mapping) else "`{}`"
    if isinstance(value, Mapping):
        return f"`{dict(value)}`"
    return f'`"{value}"`'


def reference(root: type, title: str, intro: str) -> str:
    """The configuration reference in Markdown: per section its doc, then each key's kind, default, variable and doc."""
    lines = [f"# {title}", "", intro, ""]
    for name, hint in _sections(root).items():
        lines += [f"## [{name}]", ""]
        if _is_table(hint):
            spec = next(s for s in fields(root) if s.name == name)
            kind = _Kind(get_args(hint)[1], "")
            lines += [f"{spec.metadata.get('doc', '')} Each key is a site id, each value {kind.describe()}.", ""]
            continue
        lines += [" ".join((hint.__doc__ or "").split("\n\n")[0].split()), ""]
        lines += ["| key | kind | default | environment | |", "|---|---|---|---|---|"]
        for spec in fields(hint):
            kind = _kinds(hint)[spec.name]
            env = "" if _is_table(kind.hint) else f"`{env_name(name, spec.name)}`"
            doc = spec.metadata.get("doc", "").replace("|", "\\|")
            lines.append(f"| `{spec.name}` | {kind.describe()} | {_shown(_default(spec))} | {env} | {doc} |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
