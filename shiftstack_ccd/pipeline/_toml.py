# Licensed under a 3-clause BSD style license - see LICENSE
"""Where each key of a TOML file is (private): line numbers for the pipeline's messages."""

import datetime
import re


# --------------------------------------------------------------------------------------
# Line numbers
# --------------------------------------------------------------------------------------
class KeyLines:
    """Line number of every table header and key of a TOML text.

    `tomllib` parses the file but keeps no line numbers, and no TOML parser in the
    scientific Python stack does; so the text is scanned here, line by line, tracking the
    current table (``[a.b]``, ``[[steps]]`` with its index), strings (one-line and
    multi-line), comments and bracket depth (multi-line arrays), and recording the line
    where each ``key =`` starts. Keys inside an inline table (``linear = {ra = 1, ...}``)
    get the line of the inline table, which TOML requires to fit on one line. The scan is
    used only for messages, after `tomllib` has accepted the file.
    """

    _BARE = r"[A-Za-z0-9_-]+"
    _KEY = rf'(?:{_BARE}|"(?:[^"\\]|\\.)*"|\'[^\']*\')'
    _DOTTED = re.compile(rf"\s*({_KEY}(?:\s*\.\s*{_KEY})*)\s*=")
    _PART = re.compile(_KEY)

    def __init__(self, text):
        self.lines = {}
        arrays = {}
        table = ()
        depth = 0
        multiline = None  # the closing delimiter of an open multi-line string
        for number, line in enumerate(text.splitlines(), start=1):
            rest = line
            if multiline is not None:
                end = line.find(multiline)
                if end < 0:
                    continue
                rest, multiline = line[end + 3:], None
            elif depth == 0:
                stripped = line.strip()
                if stripped.startswith("[["):
                    name = self._split(stripped[2:stripped.index("]]")])
                    # the array itself is named by its unindexed path (its parents indexed)
                    name = self._indexed(name[:-1], arrays) + name[-1:]
                    arrays[name] = arrays.get(name, 0) + 1
                    table = name + (arrays[name] - 1,)
                    self.lines.setdefault(table, number)
                    continue
                if stripped.startswith("["):
                    table = self._indexed(self._split(stripped[1:stripped.index("]")]),
                                          arrays)
                    self.lines.setdefault(table, number)
                    continue
                match = self._DOTTED.match(line)
                if match:
                    key = table + self._split(match.group(1))
                    self.lines.setdefault(key, number)
                    rest = line[match.end():]
            depth, multiline = self._scan(rest, depth)

    def _split(self, dotted):
        return tuple(part.strip("\"'") for part in self._PART.findall(dotted.strip()))

    @staticmethod
    def _indexed(name, arrays):
        """``[steps.params]`` after ``[[steps]]`` belongs to the last ``steps`` element."""
        out = ()
        for part in name:
            out += (part,)
            if out in arrays:
                out += (arrays[out] - 1,)
        return out

    @staticmethod
    def _scan(text, depth):
        """Bracket depth after ``text``, and the delimiter of a multi-line string left open."""
        i = 0
        while i < len(text):
            ch = text[i]
            if ch == "#":
                break
            if text.startswith('"""', i) or text.startswith("'''", i):
                delim = text[i:i + 3]
                end = text.find(delim, i + 3)
                if end < 0:
                    return depth, delim
                i = end + 3
                continue
            if ch in "\"'":
                j = i + 1
                while j < len(text) and text[j] != ch:
                    j += 2 if (ch == '"' and text[j] == "\\") else 1
                i = j + 1
                continue
            if ch in "[{":
                depth += 1
            elif ch in "]}":
                depth = max(depth - 1, 0)
            i += 1
        return depth, None

    def __call__(self, path):
        """Line of ``path`` (a tuple of keys), else of its closest enclosing key or table."""
        path = tuple(path)
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return None


def toml_type(value):
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return f"the integer {value}"
    if isinstance(value, float):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return f"the date-time {value.isoformat()}"
    return type(value).__name__
