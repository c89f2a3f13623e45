"""One config.pbtxt from two: the one kubeinfer generates and the one shipped with the model.

Owns: the precedence rule, and just enough of protobuf's text format to apply it (top-level
fields and the extent of their values; nothing inside a value is interpreted). Pure: text in,
text out. The storage initializer calls it after fetching the model.

The rule: **the spec wins for every top-level field kubeinfer writes; everything else the
shipped config states is kept.** kubeinfer writes what the InferenceService decides - name,
platform or backend (from ``model.format``), ``max_batch_size`` and ``dynamic_batching``
(``batching``), ``instance_group`` (the replica's GPUs, which a file in the model cannot
know), ``version_policy``, and ``input``/``output`` only when the spec lists them. A shipped
file keeps its ``optimization``, ``parameters``, ``model_warmup``, ``response_cache``,
``default_model_filename``, its own tensor signature when the spec states none, and so on.

Two fields are groups: ``platform`` and ``backend`` both choose the backend, so writing one
drops both of the shipped ones; ``dynamic_batching``, ``sequence_batching`` and
``ensemble_scheduling`` are one ``oneof``. For that one the shipped choice wins when it is not
dynamic batching: a stateful model needs its sequence batcher, and that is a property of the
model rather than tuning, so the generated ``dynamic_batching`` is left out.

Merging is idempotent (merging again with the result changes nothing), so a storage
initializer that runs twice over the same directory writes the same file.
"""

from __future__ import annotations

import dataclasses
import re

_GROUPS = {
    "platform": "backend-choice",
    "backend": "backend-choice",
    "dynamic_batching": "scheduling",
    "sequence_batching": "scheduling",
    "ensemble_scheduling": "scheduling",
}
KEPT_HEADER = "# Kept from the config.pbtxt shipped with the model:"

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SCALAR = re.compile(r"[A-Za-z0-9_.+-]+")
_CLOSING = {"{": "}", "<": ">", "[": "]"}


class ConfigSyntaxError(ValueError):
    """The text is not a protobuf text-format message Triton could read."""


@dataclasses.dataclass(frozen=True)
class Field:
    """One top-level field: its name, and its text as written (name through value, comments
    dropped) found at ``start:end`` of the parsed text."""

    name: str
    text: str
    start: int
    end: int

    @property
    def group(self) -> str:
        return _GROUPS.get(self.name, self.name)


def merge(generated: str, shipped: str) -> str:
    """``generated`` plus every field of ``shipped`` that the precedence rule keeps."""
    ours = parse_fields(generated)
    theirs = parse_fields(shipped)
    owned = {f.group for f in ours}
    out = generated
    their_scheduler = next((f for f in theirs if f.group == "scheduling"), None)
    if their_scheduler is not None and their_scheduler.name != "dynamic_batching":
        owned.discard("scheduling")
        # Cut our dynamic_batching out by position, from the end so offsets stay valid.
        for f in reversed(ours):
            if f.group == "scheduling":
                out = out[: f.start] + out[f.end :]
    out = "\n".join(line for line in out.splitlines() if line.strip()) + "\n"
    kept = [f for f in theirs if f.group not in owned]
    if not kept:
        return out
    return out + KEPT_HEADER + "\n" + "\n".join(f.text for f in kept) + "\n"


def parse_fields(text: str) -> list[Field]:
    """The top-level fields of a text-format message, in order; comments are dropped."""
    fields: list[Field] = []
    pos = _skip(text, 0)
    while pos < len(text):
        match = _NAME.match(text, pos)
        if not match:
            raise ConfigSyntaxError(f"{_where(text, pos)}: expected a field name")
        start, pos = pos, _skip(text, match.end())
        if text.startswith(":", pos):
            pos = _skip(text, pos + 1)
        pos = _value_end(text, pos)
        fields.append(
            Field(
                name=match.group(),
                text=_strip_comments(text[start:pos]).strip(),
                start=start,
                end=pos,
            )
        )
        pos = _skip(text, pos)
        if pos < len(text) and text[pos] in ",;":
            pos = _skip(text, pos + 1)
    return fields


def _value_end(text: str, pos: int) -> int:
    """End of the value starting at ``pos``: a block, a list, strings or one scalar."""
    if pos >= len(text):
        raise ConfigSyntaxError(f"{_where(text, pos)}: a value is missing")
    if text[pos] in _CLOSING:
        return _block_end(text, pos)
    if text[pos] in "\"'":
        # Adjacent strings are one value ("a" "b" == "ab").
        end = _string_end(text, pos)
        while (nxt := _skip(text, end)) < len(text) and text[nxt] in "\"'":
            end = _string_end(text, nxt)
        return end
    match = _SCALAR.match(text, pos)
    if not match:
        raise ConfigSyntaxError(f"{_where(text, pos)}: expected a value")
    return match.end()


def _block_end(text: str, pos: int) -> int:
    opened = [pos]  # where each open bracket is, to name the one never closed
    pos += 1
    while opened:
        pos = _skip(text, pos)
        if pos >= len(text):
            where = opened[-1]
            raise ConfigSyntaxError(f"{_where(text, where)}: {text[where]!r} is never closed")
        char = text[pos]
        if char in "\"'":
            pos = _string_end(text, pos)
            continue
        if char in _CLOSING:
            opened.append(pos)
        elif char in "}>]" and char != _CLOSING[text[opened.pop()]]:
            raise ConfigSyntaxError(f"{_where(text, pos)}: unbalanced {char!r}")
        pos += 1
    return pos


def _string_end(text: str, pos: int) -> int:
    quote = text[pos]
    pos += 1
    while pos < len(text):
        if text[pos] == "\\":
            pos += 2
        elif text[pos] == quote:
            return pos + 1
        elif text[pos] == "\n":
            break
        else:
            pos += 1
    raise ConfigSyntaxError(f"{_where(text, pos)}: unterminated string")


def _skip(text: str, pos: int) -> int:
    """Past whitespace and # comments."""
    while pos < len(text):
        if text[pos].isspace():
            pos += 1
        elif text[pos] == "#":
            newline = text.find("\n", pos)
            pos = len(text) if newline < 0 else newline + 1
        else:
            break
    return pos


def _strip_comments(value: str) -> str:
    """``value`` without # comments (a # inside a string is kept)."""
    out: list[str] = []
    pos = 0
    while pos < len(value):
        char = value[pos]
        if char in "\"'":
            end = _string_end(value, pos)
            out.append(value[pos:end])
            pos = end
        elif char == "#":
            newline = value.find("\n", pos)
            pos = len(value) if newline < 0 else newline
        else:
            out.append(char)
            pos += 1
    return "".join(out)


def _where(text: str, pos: int) -> str:
    line = text.count("\n", 0, pos) + 1
    column = pos - (text.rfind("\n", 0, pos) + 1) + 1
    return f"line {line}, column {column}"
