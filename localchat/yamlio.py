"""YAML read with file:line errors and hardened against hostile input; the one importer of pyyaml.

`compose` keeps the line each value started on (a `Node` tree), so a caller checking types can name the
line of a wrong value. Every message names `path:line`; the caller picks the error class it raises
(CatalogError for models.yaml, ConfigError for config.yaml)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from localchat.errors import LocalchatError

# A catalog of a few hundred entries has a few thousand values; aliases (&a ... *a) can make a short file
# expand without end ("billion laughs") or refer to themselves.
MAX_VALUES = 200_000


class Node:
    """A parsed YAML value with the line it started on (for file:line messages). A mapping's value is a
    dict of str -> Node, a sequence's a list of Node."""

    __slots__ = ("value", "line", "raw")

    def __init__(self, value: Any, line: int, raw: str | None = None) -> None:
        self.value = value
        self.line = line
        self.raw = raw  # a scalar's text as written (a hex digest of only digits is not a number)

    def plain(self) -> Any:
        """The value with every Node unwrapped: dicts, lists and scalars as yaml.safe_load gives them."""
        if isinstance(self.value, dict):
            return {k: v.plain() for k, v in self.value.items()}
        if isinstance(self.value, list):
            return [v.plain() for v in self.value]
        return self.value


def read_file(path: Path, error: type[LocalchatError], what: str = "file") -> Node:
    """Read and compose the YAML file at `path`; unreadable or non-UTF-8 files raise `error` too."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        line = exc.object.count(b"\n", 0, exc.start) + 1
        raise error(f"{path}:{line}: not UTF-8 text ({exc.reason} at byte {exc.start})",
                    hint="save the file as UTF-8") from None
    except OSError as exc:
        raise error(f"{path}: cannot read the {what} ({exc.strerror})") from None
    return compose(text, path, error)


def compose(text: str, path: Path, error: type[LocalchatError]) -> Node:
    """The YAML document in `text` as a Node tree; an empty document is Node(None, 1). Messages name `path`
    (where the text is or will be). Duplicate keys, non-scalar keys, self-referring or exploding aliases
    and values that fail to construct are refused."""
    import yaml

    if "\x00" in text:
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise error(f"{path}:{line}: contains a NUL byte; this is not a YAML file")
    try:
        loader = yaml.SafeLoader(text)  # checks the characters first (control characters are refused)
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        raise error(f"{path}:{line}: invalid YAML: character U+{exc.character:04X} is not allowed",
                    hint="remove it; the file is plain text") from None
    try:
        root = loader.get_single_node()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        problem = getattr(exc, "problem", None) or str(exc)
        raise error(f"{path}:{line}: invalid YAML: {problem}", hint="fix the file and try again") from None
    except RecursionError:  # [[[[... thousands deep
        raise error(f"{path}:1: invalid YAML: nested too deeply", hint="fix the file and try again") from None
    try:
        return _convert(root, path, error, loader, set(), [0]) if root is not None else Node(None, 1)
    except yaml.YAMLError as exc:  # a scalar that fails to construct (a bad timestamp, say)
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = mark.line + 1 if mark is not None else 1
        raise error(f"{path}:{line}: invalid value: {getattr(exc, 'problem', exc)}") from None
    finally:
        loader.dispose()


def _convert(node: Any, path: Path, error: type[LocalchatError], loader: Any, active: set[int],
             seen: list[int]) -> Node:
    import yaml

    line = node.start_mark.line + 1
    seen[0] += 1
    if seen[0] > MAX_VALUES:
        raise error(f"{path}:{line}: more than {MAX_VALUES:,} values (aliases expanding?)")
    if id(node) in active:
        raise error(f"{path}:{line}: a YAML alias refers to a value that contains it")
    if isinstance(node, yaml.MappingNode):
        active.add(id(node))
        out: dict[str, Node] = {}
        for key_node, value_node in node.value:
            key = key_node.value
            if not isinstance(key_node, yaml.ScalarNode):
                raise error(f"{path}:{key_node.start_mark.line + 1}: keys must be plain names")
            if key in out:
                raise error(f"{path}:{key_node.start_mark.line + 1}: duplicate key '{key}'")
            out[key] = _convert(value_node, path, error, loader, active, seen)
        active.discard(id(node))
        return Node(out, line)
    if isinstance(node, yaml.SequenceNode):
        active.add(id(node))
        items = [_convert(n, path, error, loader, active, seen) for n in node.value]
        active.discard(id(node))
        return Node(items, line)
    try:
        value = loader.construct_object(node, deep=True)
    except (ValueError, OverflowError) as exc:  # PyYAML raises these for a date like 2001-13-45
        raise error(f"{path}:{line}: invalid value '{node.value}': {exc}") from None
    return Node(value, line, node.value)


def scalar(text: str) -> Any:
    """What YAML reads `text` as on its own (a string, a number, a date, True, None...); ValueError when
    it is not valid YAML. For writers that want to know whether a plain scalar reads back unchanged."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(str(exc)) from None


def dump(data: Any) -> str:
    """`data` (dicts, lists, scalars) as block-style YAML text, keys in the order given, Unicode kept."""
    import yaml

    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
