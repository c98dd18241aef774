# Licensed under a 3-clause BSD style license - see LICENSE
"""The parameters of a step, and the types they accept, for checking pipeline files (private)."""

import inspect
import re


# --------------------------------------------------------------------------------------
# Parameter types, from signatures and numpydoc docstrings
# --------------------------------------------------------------------------------------
KIND_WORDS = {
    "bool": "bool", "boolean": "bool", "int": "int", "integer": "int", "float": "float",
    "number": "float", "str": "str", "string": "str", "path": "path", "pathlike": "path",
    "quantity": "quantity", "time": "time", "list": "list", "sequence": "list",
    "array-like": "list", "array_like": "list", "ndarray": "list", "tuple": "tuple",
    "dict": "dict", "mapping": "dict",
}
KIND_TEXT = {"bool": "a boolean", "int": "an integer", "float": "a number",
             "str": "a string", "path": "a file name", "quantity": "a quantity such as "
             "'1.5 arcsec'", "time": "a time (ISO string or TOML date-time)",
             "list": "an array", "tuple": "an array", "dict": "a table"}


class ParamSpec:
    """What a parameter accepts: TOML-representable kinds and string choices."""

    def __init__(self, name, kinds=(), choices=None, required=False):
        self.name = name
        self.kinds = set(kinds)
        self.choices = choices
        self.required = required

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
        return " or ".join(parts + texts) or "any value"


def split_top(text):
    """Split on commas and ' or ' outside braces, brackets and parentheses."""
    parts, depth, current = [], 0, []
    for token in re.split(r"(,|\bor\b|[{}()\[\]])", text):
        if not token:
            continue
        if token in ("{", "(", "["):
            depth += 1
        elif token in ("}", ")", "]"):
            depth -= 1
        if depth == 0 and token in (",", "or"):
            parts.append("".join(current))
            current = []
        else:
            current.append(token)
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


def kinds_from_text(text):
    """Kinds and choices from a numpydoc type line or an annotation's text."""
    choices = None
    match = re.search(r"\{([^}]*)\}", text)
    if match:
        choices = tuple(c.strip().strip("'\"") for c in match.group(1).split(",")
                        if c.strip())
        text = text.replace(match.group(0), " ")
    kinds = set()
    if "(" in text and "int" in text:  # "(int, int)"
        kinds.add("tuple")
    lowered = text.lower().replace("`", " ").replace("~", " ")
    for word in re.findall(r"[a-z][a-z_\-]*", lowered.replace(".", " ")):
        if word in KIND_WORDS:
            kinds.add(KIND_WORDS[word])
    if "tuple" in kinds:
        kinds.add("list")
    return kinds, choices


def doc_types(function):
    """``{name: type line}`` from the numpydoc Parameters section of a docstring."""
    doc = inspect.getdoc(function) or ""
    lines = doc.splitlines()
    types = {}
    try:
        start = next(i for i, line in enumerate(lines[:-1])
                     if line.strip() == "Parameters" and set(lines[i + 1].strip()) == {"-"})
    except StopIteration:
        return types
    for i in range(start + 2, len(lines)):
        line = lines[i]
        if i + 1 < len(lines) and line.strip() and set(lines[i + 1].strip()) == {"-"} \
                and not line.startswith(" "):
            break  # next section
        if not line or line.startswith(" "):
            continue
        names, _, type_text = line.partition(":")
        names = [n.strip() for n in names.split(",") if n.strip()]
        if len(names) > 1:
            type_parts = [p for p in split_top(type_text) if p != "optional"]
            if len(type_parts) == len(names):
                types.update(zip(names, type_parts))
                continue
        for name in names:
            types[name] = type_text.strip()
    return types


def param_specs(function, skip=0):
    """``({name: ParamSpec}, accepts_any_keyword)`` for a step function."""
    signature = inspect.signature(function)
    doc = doc_types(function)
    specs, var_keyword = {}, False
    parameters = list(signature.parameters.values())
    for parameter in parameters[skip:]:
        if parameter.kind == parameter.VAR_KEYWORD:
            var_keyword = True
            continue
        if parameter.kind == parameter.VAR_POSITIONAL:
            continue
        kinds, choices = set(), None
        if parameter.annotation is not parameter.empty:
            annotation = parameter.annotation
            text = annotation.__name__ if isinstance(annotation, type) else str(annotation)
            kinds, choices = kinds_from_text(text)
        if not kinds and not choices and parameter.name in doc:
            kinds, choices = kinds_from_text(doc[parameter.name])
        default = parameter.default
        if not kinds and not choices and default is not parameter.empty and default is not None:
            for typ, kind in ((bool, "bool"), (int, "int"), (float, "float"), (str, "str"),
                              ((list, tuple), "list"), (dict, "dict")):
                if isinstance(default, typ):
                    kinds = {kind}
                    break
        if not kinds and not choices:
            kinds = {"any"}
        specs[parameter.name] = ParamSpec(parameter.name, kinds, choices,
                                          required=default is parameter.empty)
    return specs, var_keyword
