"""Parameters with declared limits, and their last values remembered across Slicer sessions.

A parameter class is a dataclass whose fields may be `Annotated[type, validator]` with the
validators of Slicer's `slicer.parameterNodeWrapper` (`WithinRange`, `Minimum`, `Choice`).
Outside Slicer (slicer-core has no parameterNodeWrapper) stand-ins with the same names,
arguments, attributes and `validate` take their place. `violations(parameters)` gives one
sentence per value that breaks its field's limits; `declared(cls, name)` gives a field's
validators, so a widget can take its range or choices from them.

`SettingsStore(group)` writes the fields a class lists in `REMEMBERED` to QSettings
("<group>/<field>", as text) and reads them back; a stored value that does not parse or breaks
its limits is ignored, so an outdated setting never blocks a panel.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from typing import Any

try:
    from slicer.parameterNodeWrapper import Choice, Minimum, WithinRange
except ImportError:  # slicer-core (tests): the same validators, as Slicer defines them

    class WithinRange:
        """A value in [minimum, maximum]."""

        def __init__(self, minimum, maximum):
            self.minimum, self.maximum = minimum, maximum

        def validate(self, value) -> None:
            if not self.minimum <= value <= self.maximum:
                raise ValueError(f"Value must be within range [{self.minimum}, {self.maximum}], is {value}")

    class Minimum:
        """A value >= minimum."""

        def __init__(self, minimum):
            self.minimum = minimum

        def validate(self, value) -> None:
            if value < self.minimum:
                raise ValueError(f"Value must be greater than {self.minimum}, is {value}")

    class Choice:
        """A value among `choices`."""

        def __init__(self, choices):
            self.choices = choices

        def validate(self, value) -> None:
            if value not in self.choices:
                raise ValueError(f"Value is {value}, but must be in one of the following: {self.choices}")


__all__ = ["Choice", "Minimum", "SettingsStore", "WithinRange", "declared", "violations"]
_TRUE = ("1", "true", "yes", "on")


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=True)


def declared(cls: type, name: str) -> tuple:
    """The validators declared on field `name` of `cls` (empty if none)."""
    return tuple(getattr(_hints(cls)[name], "__metadata__", ()))


def _label(name: str) -> str:
    """"templateSource" -> "template source"."""
    return re.sub(r"(?<!^)([A-Z])", lambda m: " " + m.group(1).lower(), name)


def _sentence(name: str, value: Any, validator: Any) -> str:
    label = _label(name)
    if isinstance(validator, Choice):
        return f"{label} {value!r} is not one of {', '.join(map(str, validator.choices))}"
    if isinstance(validator, WithinRange):
        return f"{label} {value} must be between {validator.minimum:g} and {validator.maximum:g}"
    if isinstance(validator, Minimum):
        return f"{label} {value} must be at least {validator.minimum:g}"
    return f"{label} {value!r} is not allowed"


def _breaks(validator: Any, value: Any) -> bool:
    try:
        validator.validate(value)
    except (ValueError, TypeError):
        return True
    return False


def violations(parameters: Any) -> list[str]:
    """One sentence per field value of `parameters` that breaks a declared limit."""
    return [_sentence(field.name, getattr(parameters, field.name), validator)
            for field in dataclasses.fields(parameters)
            for validator in declared(type(parameters), field.name)
            if _breaks(validator, getattr(parameters, field.name))]


def _base(hint: Any) -> type:
    return typing.get_args(hint)[0] if typing.get_origin(hint) is typing.Annotated else hint


def parseValue(kind: type, text: str) -> Any:
    """`text` as a value of type `kind` (bool, int, float or str); ValueError if it does not parse."""
    if kind is bool:
        return str(text).strip().lower() in _TRUE
    if kind in (int, float):
        return kind(text)
    return str(text)


class SettingsStore:
    """The remembered fields (`cls.REMEMBERED`) of one parameter class in QSettings under `group`.

    settings: a QSettings-like object (`value(key)`, `setValue(key, value)`, `contains(key)`);
    default `qt.QSettings()`, Slicer's user settings.
    """

    def __init__(self, group: str, settings: Any = None):
        self.group = group
        self._settings = settings

    @property
    def settings(self) -> Any:
        if self._settings is None:
            import qt

            self._settings = qt.QSettings()
        return self._settings

    def save(self, parameters: Any) -> None:
        """Write the remembered fields of `parameters`."""
        for name in type(parameters).REMEMBERED:
            self.settings.setValue(f"{self.group}/{name}", str(getattr(parameters, name)))

    def restore(self, parameters: Any) -> Any:
        """`parameters` with the remembered fields set from the settings where a stored value
        parses and keeps within its limits (the others keep their values)."""
        hints = _hints(type(parameters))
        for name in type(parameters).REMEMBERED:
            key = f"{self.group}/{name}"
            if not self.settings.contains(key):
                continue
            try:
                value = parseValue(_base(hints[name]), self.settings.value(key))
            except (TypeError, ValueError):
                continue
            if not any(_breaks(validator, value) for validator in declared(type(parameters), name)):
                parameters = dataclasses.replace(parameters, **{name: value})
        return parameters
