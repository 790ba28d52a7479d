"""One YAML reader for every file a person edits (hosts.yaml, lab topologies).

It cannot be made to crash or to eat the machine: the bytes are decoded as
strict UTF-8, the size and the nesting depth are bounded before PyYAML's
recursive composer runs, explicit tags (``!!int abc``, ``!!python/...``) are
refused, integers are bounded in length, and every failure is one
``YamlFileError`` carrying the line, with the offending text truncated.
Callers turn it into their own ``file:line: field: message`` error.
"""
from __future__ import annotations

import os
from collections.abc import Iterator

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.resolver import Resolver

MAX_BYTES = 1 << 20             # 1 MiB: a 1,000-host hosts.yaml is about 80 KB
MAX_DEPTH = 32                  # the formats nest 5 levels at most
MAX_INT_DIGITS = 20             # beyond any value a field takes (and Python's 4300 limit)
MAX_SHOWN = 60                  # characters of a user's value quoted in a message

_TAG = "tag:yaml.org,2002:"
_OPEN = (yaml.BlockMappingStartToken, yaml.BlockSequenceStartToken,
         yaml.FlowMappingStartToken, yaml.FlowSequenceStartToken)
_CLOSE = (yaml.BlockEndToken, yaml.FlowMappingEndToken, yaml.FlowSequenceEndToken)


class YamlFileError(ValueError):
    """A file that is not acceptable YAML; ``line`` is 1-based when known."""

    def __init__(self, message: str, line: int | None = None, field: str = "<yaml>") -> None:
        super().__init__(message)
        self.message, self.line, self.field = message, line, field


def shown(value: object, limit: int = MAX_SHOWN) -> str:
    """repr() of a user's value, cut so a 10 MB name never becomes a 10 MB log line."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def truncate(message: str, limit: int = 300) -> str:
    return message if len(message) <= limit else message[:limit - 3] + "..."


def read_text(path: str | os.PathLike, max_bytes: int = MAX_BYTES) -> str:
    """The file's text: at most ``max_bytes``, strict UTF-8; OSError for I/O problems."""
    with open(path, "rb") as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise YamlFileError(f"the file is larger than {max_bytes} bytes", None, "<file>")
    return decode(data)


def decode(data: bytes) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise YamlFileError(f"not UTF-8 text: byte 0x{data[exc.start]:02x} at line {line} "
                            "(save the file as UTF-8)", line, "<file>") from None
    if "\x00" in text:
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise YamlFileError("a NUL character: this is a binary file, not YAML", line, "<file>")
    return text.removeprefix("\ufeff")


def compose(text: str, max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH) -> Node | None:
    """Parse ``text`` into PyYAML nodes (which keep their line), with every limit applied."""
    if len(text) > max_bytes:
        raise YamlFileError(f"the document is larger than {max_bytes} characters", None, "<file>")
    depth = 0
    try:
        for token in yaml.scan(text, Loader=yaml.SafeLoader):   # iterative: no recursion
            if isinstance(token, _OPEN):
                depth += 1
                if depth > max_depth:
                    raise YamlFileError(f"nested more than {max_depth} levels deep",
                                        token.start_mark.line + 1)
            elif isinstance(token, _CLOSE):
                depth -= 1
            elif isinstance(token, (yaml.AliasToken, yaml.AnchorToken)):
                raise YamlFileError("anchors and aliases (& and *) are not allowed",
                                    token.start_mark.line + 1)
            elif isinstance(token, yaml.TagToken):
                raise YamlFileError(f"YAML tags like {shown(_tag_text(token))} are not allowed",
                                    token.start_mark.line + 1)
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        what = ", ".join(filter(None, (exc.context, exc.problem)))
        raise YamlFileError(truncate(f"invalid YAML: {what}"),
                            None if mark is None else mark.line + 1) from None
    except yaml.YAMLError as exc:
        raise YamlFileError(truncate(f"invalid YAML: {exc}")) from None
    except RecursionError:          # belt and braces: the depth check should stop this first
        raise YamlFileError(f"nested more than {max_depth} levels deep") from None
    for node in _walk(root):
        _check_node(node)
    return root


def _tag_text(token: yaml.TagToken) -> str:
    handle, suffix = token.value
    return f"{handle or ''}{suffix or ''}"


def _walk(root: Node | None) -> Iterator[Node]:
    stack = [root] if root is not None else []
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, SequenceNode):
            stack.extend(node.value)
        elif isinstance(node, MappingNode):
            for k, v in node.value:
                stack.extend((k, v))


def _check_node(node: Node) -> None:
    line = node.start_mark.line + 1
    if isinstance(node, ScalarNode):
        implicit = Resolver().resolve(ScalarNode, node.value, (node.style is None, True))
        if implicit != node.tag:
            raise YamlFileError(f"YAML tags are not allowed ({shown(node.value)})", line)
        if node.tag == _TAG + "int" and len(node.value.lstrip("+-0")) > MAX_INT_DIGITS:
            raise YamlFileError(f"integer {shown(node.value, 30)} is too large", line)
    elif isinstance(node, SequenceNode) and node.tag != _TAG + "seq" or \
            isinstance(node, MappingNode) and node.tag != _TAG + "map":
        raise YamlFileError(f"YAML tag {shown(node.tag)} is not allowed", line)
