"""Reading the kit's YAML files (configs, grids, notebook presets) with errors a user can act on.

A missing file, malformed YAML, an empty file or a file that is not a mapping raises
``ValueError`` with one line naming the file (and the line, for malformed YAML), so the
command line can print it and exit 2 before anything loads:

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "bad.yaml"
    >>> _ = path.write_text("task: extractive_qa\\nmethod: [unclosed\\n")
    >>> try:
    ...     read_mapping(path)
    ... except ValueError as problem:
    ...     print(str(problem).replace(str(path.parent), "DIR"))
    DIR/bad.yaml line 2: malformed YAML (while parsing a flow sequence, expected ',' or ']', but got '<stream end>')
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["parse_value", "read_mapping"]


def read_mapping(path, what: str = "settings") -> dict:
    """The mapping a YAML file holds; ``what`` names what it should hold, for the messages."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ValueError(f"{path} does not exist") from None
    except (IsADirectoryError, UnicodeDecodeError) as problem:
        raise ValueError(f"{path} is not a readable YAML file ({type(problem).__name__})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as problem:
        raise ValueError(f"{path}{_where(problem)}: malformed YAML ({_reason(problem)})") from None
    if data is None:
        raise ValueError(f"{path} is empty: it must hold a mapping of {what}")
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a mapping of {what}, not a {type(data).__name__}")
    return data


def parse_value(text: str, key: str):
    """One ``--set key=value`` value, read as YAML (``0.5`` a number, ``[1, 2]`` a list).

    >>> parse_value("[0, 1]", "seed")
    [0, 1]
    """
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as problem:
        raise ValueError(f"--set {key}={text}: malformed YAML value ({_reason(problem)})") from None


def _where(problem) -> str:
    """Where the broken construct starts (an unclosed list: its ``[``), else where parsing stopped."""
    mark = getattr(problem, "context_mark", None) or getattr(problem, "problem_mark", None)
    return f" line {mark.line + 1}" if mark is not None else ""


def _reason(problem) -> str:
    parts = [getattr(problem, "context", None), getattr(problem, "problem", None)]
    reason = ", ".join(str(p) for p in parts if p) or str(problem)
    return " ".join(reason.split())
