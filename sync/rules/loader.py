"""Reading YAML written by people, keeping track of where everything was.

Every file a user writes (``rules.yaml``, rules-test files, ``sources.yaml``)
goes through ``load_yaml``. It differs from ``yaml.safe_load`` on purpose:

* mappings and sequences come back as ``MarkedDict`` / ``MarkedList``, which
  remember the line of each key and item, so that errors can name it;
* a key given twice is an error (PyYAML silently keeps the last one);
* only ``true``/``false`` are booleans: ``on``, ``no``, ``yes`` stay strings
  (YAML 1.1 would turn a status called ``no`` into ``False``);
* ``2026-01-01`` and ``10:30`` stay strings: instants are parsed, and checked
  for an offset, by whoever knows they are instants;
* anchors and aliases are refused: they hide repetition from readers and
  allow "billion laughs" documents.

Problems are collected, not raised one by one; a syntax error stops reading.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import BaseResolver
from yaml.scanner import Scanner

from sync.exceptions import Problem, RulesError
from sync.rules.yaml_errors import explain as explain_yaml_error

#: Rule files are small; anything this big is a mistake (or an attack).
MAX_BYTES = 2 * 1024 * 1024
#: How deeply mappings and lists may nest. The shipped files need 6 levels;
#: thousands of ``[[[[`` would exhaust the recursive composer's stack.
MAX_DEPTH = 32


class MarkedDict(dict[Any, Any]):
    """A mapping that remembers where it and each of its keys were written."""

    line: int | None = None
    key_lines: dict[Any, int]
    #: First and last line of values written over several lines without quotes:
    #: a line indented further than its key continues the value, which explains
    #: conditions that "swallowed" the lines below them.
    value_spans: dict[Any, tuple[int, int]]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.key_lines = {}
        self.value_spans = {}

    def line_of(self, key: Any) -> int | None:
        return self.key_lines.get(key, self.line)


class MarkedList(list[Any]):
    """A sequence that remembers where it and each of its items were written."""

    line: int | None = None
    item_lines: list[int]

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.item_lines = []

    def line_of(self, index: int) -> int | None:
        if 0 <= index < len(self.item_lines):
            return self.item_lines[index]
        return self.line


def line_of(container: Any, key: Any = None) -> int | None:
    """Line of ``container[key]`` (or of the container) when known."""
    if isinstance(container, MarkedDict | MarkedList):
        return container.line if key is None else container.line_of(key)
    return None


class _Resolver(BaseResolver):
    """Plain-scalar typing: null, true/false, decimal ints and floats; the rest are strings."""


_Resolver.add_implicit_resolver(
    "tag:yaml.org,2002:null", re.compile(r"^(?:~|null|Null|NULL|)$"), ["~", "n", "N", ""]
)
_Resolver.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_Resolver.add_implicit_resolver(
    "tag:yaml.org,2002:int", re.compile(r"^[-+]?[0-9]+$"), list("-+0123456789")
)
_Resolver.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?$"),
    list("-+0123456789."),
)


class _AliasFound(Exception):
    def __init__(self, node_line: int) -> None:
        self.line = node_line


class _TooDeep(Exception):
    def __init__(self, node_line: int) -> None:
        self.line = node_line


class _Composer(Reader, Scanner, Parser, Composer, _Resolver):
    def __init__(self, stream: str) -> None:
        Reader.__init__(self, stream)
        Scanner.__init__(self)
        Parser.__init__(self)
        Composer.__init__(self)
        _Resolver.__init__(self)
        self.depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        if self.check_event(yaml.AliasEvent):
            raise _AliasFound(self.peek_event().start_mark.line + 1)  # type: ignore[no-untyped-call]
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise _TooDeep(self.peek_event().start_mark.line + 1)  # type: ignore[no-untyped-call]
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


@dataclass
class Document:
    """A YAML document turned into plain values, plus what was wrong with it."""

    file: str
    data: Any
    problems: list[Problem] = field(default_factory=list)


def _scalar(node: ScalarNode) -> Any:
    value = node.value
    tag = node.tag
    if tag == "tag:yaml.org,2002:null":
        return None
    if tag == "tag:yaml.org,2002:bool":
        return value.lower() == "true"
    if tag == "tag:yaml.org,2002:int":
        return int(value)
    if tag == "tag:yaml.org,2002:float":
        return float(value)
    return value


class _Converter:
    def __init__(self, file: str) -> None:
        self.file = file
        self.problems: list[Problem] = []

    def convert(self, node: Node, path: tuple[str | int, ...]) -> Any:
        line = node.start_mark.line + 1
        if isinstance(node, ScalarNode):
            return _scalar(node)
        if isinstance(node, SequenceNode):
            seq = MarkedList()
            seq.line = line
            for index, item in enumerate(node.value):
                seq.append(self.convert(item, (*path, index)))
                seq.item_lines.append(item.start_mark.line + 1)
            return seq
        if isinstance(node, MappingNode):
            mapping = MarkedDict()
            mapping.line = line
            for key_node, value_node in node.value:
                key_line = key_node.start_mark.line + 1
                if not isinstance(key_node, ScalarNode):
                    self.problems.append(
                        Problem(
                            self.file,
                            key_line,
                            path,
                            "a name must be a word, not a list or a group of lines",
                        )
                    )
                    continue
                key = _scalar(key_node)
                if key is None or isinstance(key, bool | float):
                    # A key like `no:` or `1.5:` is almost certainly meant as text.
                    key = key_node.value
                if key in mapping:
                    first = mapping.key_lines[key]
                    self.problems.append(
                        Problem(
                            self.file,
                            key_line,
                            path,
                            f"`{key}` appears twice here (first on line {first}); keep only one",
                        )
                    )
                    continue
                mapping[key] = self.convert(value_node, (*path, key))
                mapping.key_lines[key] = key_line
                first, last = value_node.start_mark.line + 1, value_node.end_mark.line + 1
                if isinstance(value_node, ScalarNode) and value_node.style is None and last > first:
                    mapping.value_spans[key] = (first, last)
            return mapping
        raise AssertionError(f"unexpected YAML node {node!r}")  # pragma: no cover


def load_yaml(text: str, file: str) -> Document:
    """Parse ``text`` (named ``file`` in messages). Raises ``RulesError`` when the
    text is not YAML at all; duplicate keys and the like are in ``problems``."""
    if len(text.encode("utf-8", errors="replace")) > MAX_BYTES:
        raise RulesError([Problem(file, None, (), f"file is larger than {MAX_BYTES // 1024} KiB")])
    composer: _Composer | None = None
    try:
        # The reader checks for forbidden characters as soon as it is built.
        composer = _Composer(text)
        node = composer.get_single_node()
    except _AliasFound as exc:
        raise RulesError(
            [
                Problem(
                    file,
                    exc.line,
                    (),
                    "a value cannot start with & or *: they copy part of the file from "
                    "elsewhere, which is not supported here; write the part out in full, or "
                    "put the value in quotes if the & or * is text",
                )
            ]
        ) from None
    except _TooDeep as exc:
        raise RulesError(
            [Problem(file, exc.line, (), f"indented more than {MAX_DEPTH} levels deep; flatten it")]
        ) from None
    except yaml.MarkedYAMLError as exc:
        line, message = explain_yaml_error(exc, text)
        raise RulesError([Problem(file, line, (), message)]) from None
    except yaml.reader.ReaderError as exc:  # control characters
        line = text[: exc.position].count("\n") + 1
        what = f"#x{exc.character:04x}" if isinstance(exc.character, int) else repr(exc.character)
        raise RulesError(
            [
                Problem(
                    file,
                    line,
                    (),
                    f"an invisible control character ({what}) is on this line; delete it "
                    "(retype the line if you cannot see it)",
                )
            ]
        ) from None
    except yaml.YAMLError as exc:
        raise RulesError([Problem(file, None, (), f"cannot read YAML: {exc}")]) from None
    finally:
        if composer is not None:
            composer.dispose()
    if node is None:
        return Document(file, None)
    converter = _Converter(file)
    data = converter.convert(node, ())
    return Document(file, data, converter.problems)


def read_yaml_file(path: str | Path) -> Document:
    """Read and parse a YAML file, turning I/O and encoding errors into ``RulesError``."""
    name = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise RulesError([Problem(name, None, (), f"cannot read file: {reason}")]) from None
    if len(raw) > MAX_BYTES:
        raise RulesError([Problem(name, None, (), f"file is larger than {MAX_BYTES // 1024} KiB")])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise RulesError(
            [
                Problem(
                    name,
                    line,
                    (),
                    "this line has a character the file's encoding cannot show: "
                    "save the file as UTF-8 in your editor",
                )
            ]
        ) from None
    return load_yaml(text, name)
