"""Class weights from a science team's small TOML file: raise drill holes, lower wheel.

    # priorities.toml
    [weights]
    "drill holes" = 3.0
    wheel = 0.25

A weight multiplies what sending an image of that class gains (1 is neutral, 0 never sends the class
for coverage); classes not named keep 1. A file that is not valid TOML, names a class the model does not
know, or gives a weight that is not a number ≥ 0 is one ``MarsvisionError`` naming the line.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from ..errors import MarsvisionError

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, published as tomli
    import tomli as tomllib

MAX_WEIGHT = 100.0  # a weight this large already sends the class before anything else


class PrioritiesError(MarsvisionError):
    """A priorities file that cannot be used; the message names the file and the line."""


def _line_of(text: str, key: str) -> int | None:
    """The first line that assigns ``key`` (bare or quoted) or opens a table of that name, for messages
    about a value rather than the syntax (tomllib gives no positions for those)."""
    name = "|".join(re.escape(k) for k in (f'"{key}"', f"'{key}'", key))
    pattern = re.compile(rf"^\s*(?:(?:{name})\s*=|\[\s*(?:{name})\s*\])")
    for n, line in enumerate(text.splitlines(), 1):
        if pattern.match(line):
            return n
    return None


def load_priorities(path: str | Path, class_names: list[str]) -> dict[str, float]:
    """{class: weight} for every class of the model (1.0 where the file says nothing)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise PrioritiesError(f"{path}: cannot read the priorities file ({e})") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        line = getattr(e, "lineno", None) or re.search(r"line (\d+)", str(e))
        line = line if isinstance(line, int) else (int(line.group(1)) if line else "?")
        msg = getattr(e, "msg", str(e).split(" (at line")[0])
        raise PrioritiesError(f"{path}: line {line}: not valid TOML: {msg}") from None
    extra = sorted(set(doc) - {"weights"})
    if extra:
        raise PrioritiesError(
            f"{path}: line {_line_of(text, extra[0]) or '?'}: unknown key {extra[0]!r} (expected a [weights] table)"
        )
    weights = doc.get("weights", {})
    if not isinstance(weights, dict):
        raise PrioritiesError(f"{path}: line {_line_of(text, 'weights') or '?'}: 'weights' must be a table")
    out = dict.fromkeys(class_names, 1.0)
    for name, value in weights.items():
        where = f"{path}: line {_line_of(text, name) or '?'}"
        if name not in out:
            raise PrioritiesError(f"{where}: unknown class {name!r} (the model's classes: {', '.join(class_names)})")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= MAX_WEIGHT:
            raise PrioritiesError(f"{where}: the weight of {name!r} must be a number from 0 to {MAX_WEIGHT:g}")
        out[name] = float(value)
    return out
