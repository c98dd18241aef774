# Licensed under a 3-clause BSD style license - see LICENSE
"""The parameters of a step, and the types they accept, for checking pipeline files (private).

The types are the step's annotations, the single source (``threshold: float = 3.0``,
``method: Literal["a", "b"] = "a"``, ``gain: float | Quantity | None = None``); a parameter
without one accepts what its default's type is, else anything. TOML has no null: a parameter
that takes None (``X | None``, or a default of None) takes the string ``"none"`` for it, unless
it also takes free strings or file names.
"""

import collections.abc
import inspect
import os
import pathlib
import types
import typing

KIND_TEXT = {"bool": "a boolean", "int": "an integer", "float": "a number",
             "str": "a string", "path": "a file name", "quantity": "a quantity such as "
             "'1.5 arcsec'", "time": "a time (ISO string or TOML date-time)",
             "list": "an array", "tuple": "an array", "dict": "a table"}


class ParamSpec:
    """What a parameter accepts: TOML-representable kinds and string choices."""

    def __init__(self, name, kinds=(), choices=None, required=False, nullable=False):
        self.name = name
        self.kinds = set(kinds)
        self.choices = choices
        self.required = required
        self.nullable = nullable

    @property
    def takes_none(self):
        """Whether the string ``"none"`` stands for None (TOML has no null)."""
        return self.nullable and not self.kinds & {"str", "path", "any"}

    def expectation(self):
        parts = [f"one of {', '.join(repr(c) for c in self.choices)}"] if self.choices else []
        order = ("bool", "int", "float", "str", "path", "quantity", "time", "list", "tuple",
                 "dict")
        texts = []
        for kind in order:
            if kind in self.kinds and KIND_TEXT[kind] not in texts:
                if kind == "str" and self.choices:
                    continue
                texts.append(KIND_TEXT[kind])
        none = ["'none' (for None)"] if self.takes_none else []
        return " or ".join(parts + texts + none) or "any value"


def _class_kinds(cls):
    """The kinds a class stands for; none for classes TOML cannot give (CCDData, SkyCoord)."""
    from astropy.time import Time
    from astropy.units import Quantity

    for base, kinds in ((bool, {"bool"}), (int, {"int"}), (float, {"float"}), (str, {"str"}),
                        (os.PathLike, {"path"}), (pathlib.PurePath, {"path"}),
                        (Quantity, {"quantity"}), (Time, {"time"}), (tuple, {"tuple", "list"}),
                        (list, {"list"}), (dict, {"dict"})):
        if isinstance(cls, type) and issubclass(cls, base):
            return set(kinds)
    if cls in (collections.abc.Sequence, collections.abc.Iterable):
        return {"list"}
    if cls is collections.abc.Mapping:
        return {"dict"}
    return set()


def annotation_kinds(annotation):
    """``(kinds, choices)`` of an annotation: unions, ``Optional``, ``Literal`` and
    generic containers (``tuple[float, float]``, ``list[str]``) included.

    Examples
    --------
    >>> from typing import Literal
    >>> from astropy.units import Quantity
    >>> kinds, choices = annotation_kinds(float | Quantity | Literal["auto"] | None)
    >>> sorted(kinds), choices
    (['float', 'quantity'], ('auto',))
    """
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        kinds, choices = set(), ()
        for arg in typing.get_args(annotation):
            k, c = annotation_kinds(arg)
            kinds |= k
            choices += c or ()
        return kinds, choices or None
    if origin is typing.Literal:
        values = typing.get_args(annotation)
        kinds = {kind for v in values if not isinstance(v, str) for kind in _class_kinds(type(v))}
        return kinds, tuple(v for v in values if isinstance(v, str)) or None
    if annotation is type(None) or annotation is inspect.Parameter.empty:
        return set(), None
    return _class_kinds(origin if origin is not None else annotation), None


def _annotations(function):
    """Resolved annotations (string ones too) of the function a decorator may wrap."""
    function = inspect.unwrap(function)
    try:
        return typing.get_type_hints(function)
    except Exception:  # noqa: BLE001 - unresolvable names: use them as written
        return dict(getattr(function, "__annotations__", {}))


def param_specs(function, skip=0):
    """``({name: ParamSpec}, accepts_any_keyword)`` for a step function."""
    signature = inspect.signature(function)
    hints = _annotations(function)
    specs, var_keyword = {}, False
    parameters = list(signature.parameters.values())
    for parameter in parameters[skip:]:
        if parameter.kind == parameter.VAR_KEYWORD:
            var_keyword = True
            continue
        if parameter.kind == parameter.VAR_POSITIONAL:
            continue
        kinds, choices = annotation_kinds(hints.get(parameter.name, parameter.empty))
        default = parameter.default
        if not kinds and not choices and parameter.name not in hints \
                and default is not parameter.empty and default is not None:
            kinds = _class_kinds(type(default))
        if not kinds and not choices:
            kinds = {"any"}
        annotation = hints.get(parameter.name)
        nullable = default is None or type(None) in typing.get_args(annotation)
        specs[parameter.name] = ParamSpec(parameter.name, kinds, choices,
                                          required=default is parameter.empty,
                                          nullable=nullable)
    return specs, var_keyword
