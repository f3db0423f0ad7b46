"""``ast.literal_eval`` without compiling anything: the literal subset of Python, read from ``tokenize`` tokens.

numpy reads ``.npy`` headers with ``ast.literal_eval``. Calling it here would hand the attacker's text to
``compile`` (to build the syntax tree), which the scanner never does with scanned data. This module accepts
what ``literal_eval`` accepts (CPython 3.10 to 3.13):

* constants: strings and bytes (prefixes ``r``, ``u``, ``b``, adjacent literals joined), numbers (``int``
  in every base with underscores, ``float``, imaginary), ``True``, ``False``, ``None``, ``...``;
* one unary ``+`` or ``-`` applied to a number (parentheses around the number allowed: ``-(3)``), and a
  real number plus or minus an imaginary one (``1+2j``);
* tuples (with or without parentheses, at the top level too), lists, sets, ``set()``, dicts;
* comments, blank lines, newlines inside brackets, backslash continuations.

Everything else (names, calls, operators, f-strings, ``--3``, starred items) is refused with
:class:`NotLiteral`, as ``literal_eval`` refuses it with ``ValueError`` or ``SyntaxError``. Where the pure-
Python tokenizer and CPython's differ (rare corners of number and string syntax), a caller must not
conclude from a refusal that nothing runs: the ``.npy`` reader still looks at the bytes behind the header.
"""

from __future__ import annotations

import codecs
import io
import tokenize

from picklewarden._typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any

_SKIP = frozenset({tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT, tokenize.ENDMARKER})
_CLOSING = {"(": ")", "[": "]", "{": "}"}
_MAX_NESTING = 100
"""CPython's parser refuses deeper nesting of brackets (its limit is 200; nothing legitimate comes close)."""
_PREFIXES = frozenset({"", "r", "u", "b", "br", "rb"})


class NotLiteral(ValueError):
    """``ast.literal_eval`` raises (``SyntaxError`` or ``ValueError``) on this text."""


def tokens_of(text: str) -> list[tokenize.TokenInfo]:
    """The significant tokens of ``text`` (NotLiteral where the tokenizer fails)."""
    if "\x00" in text:
        raise NotLiteral("source code cannot contain null bytes")
    try:
        found = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, SyntaxError) as exc:
        raise NotLiteral(f"does not tokenize: {exc}") from None
    kept = [t for t in found if t.type not in _SKIP]
    for token in kept:
        if token.type in (tokenize.INDENT, tokenize.DEDENT, tokenize.ERRORTOKEN):
            raise NotLiteral(f"unexpected {tokenize.tok_name[token.type]} {token.string!r}")
    return kept


def _string(text: str) -> str | bytes:
    body_at = len(text) - len(text.lstrip("rRbBuUfF"))
    prefix = text[:body_at].lower()
    if prefix not in _PREFIXES:
        raise NotLiteral(f"string prefix {prefix!r} is not a constant")  # f-strings are JoinedStr nodes
    quote = text[body_at : body_at + 3] if text[body_at : body_at + 3] in ('"""', "'''") else text[body_at]
    body = text[body_at + len(quote) : len(text) - len(quote)]
    raw = "r" in prefix
    if "b" in prefix:
        if not body.isascii():
            raise NotLiteral("bytes can only contain ASCII literal characters")
        data = body.encode("ascii")
        return data if raw else codecs.escape_decode(data)[0]
    if raw or "\\" not in body:
        return body
    try:
        return body.encode("latin-1").decode("unicode_escape")
    except UnicodeEncodeError:
        raise NotLiteral("escapes beside characters past U+00FF are not decoded here") from None
    except UnicodeDecodeError as exc:
        raise NotLiteral(f"bad escape: {exc}") from None


def _number(text: str) -> int | float | complex:
    try:
        if text[-1] in "jJ":
            return complex(text)
        if text[:2].lower() in ("0x", "0o", "0b") or not any(c in text for c in ".eE"):
            return int(text, 0)
        return float(text)
    except ValueError:
        raise NotLiteral(f"invalid number {text!r}") from None


class _Parser:
    def __init__(self, tokens: list[tokenize.TokenInfo]) -> None:
        self.tokens = tokens
        self.at = 0

    def peek(self) -> str | None:
        return self.tokens[self.at].string if self.at < len(self.tokens) else None

    def take(self) -> tokenize.TokenInfo:
        if self.at >= len(self.tokens):
            raise NotLiteral("unexpected end of text")
        token = self.tokens[self.at]
        self.at += 1
        return token

    def expect(self, string: str) -> None:
        if self.take().string != string:
            raise NotLiteral(f"expected {string!r}")

    def top(self) -> Any:
        """An expression list: ``a`` or a bare tuple ``a, b`` (as ``parse(mode="eval")`` reads it)."""
        first = self.value(0)
        if self.peek() != ",":
            return first
        items = [first]
        while self.peek() == ",":
            self.take()
            if self.peek() is None:
                break
            items.append(self.value(0))
        return tuple(items)

    def value(self, depth: int) -> Any:
        """One literal, with literal_eval's rules for signs and complex sums."""
        left, _, is_number = self.operand(depth)
        if self.peek() in ("+", "-"):
            if not is_number or isinstance(left, complex):
                raise NotLiteral("binary operator on something that is not a real number")
            op = self.take().string
            right, right_signed, right_number = self.operand(depth)
            if not right_number or right_signed or not isinstance(right, complex):
                raise NotLiteral("only real +/- imaginary sums are literals")
            return left + right if op == "+" else left - right
        return left

    def operand(self, depth: int) -> tuple[Any, bool, bool]:
        """(value, had a sign, is a number) of one term."""
        if self.peek() in ("+", "-"):
            sign = self.take().string
            number = self.bare_number(depth)
            return (number if sign == "+" else -number), True, True
        token = self.tokens[self.at] if self.at < len(self.tokens) else None
        if token is not None and token.type == tokenize.NUMBER:
            self.take()
            return _number(token.string), False, True
        if token is not None and token.string == "(" and self._parenthesised_number():
            return self.bare_number(depth), False, True
        return self.atom(depth), False, False

    def _parenthesised_number(self) -> bool:
        """The next tokens are a number wrapped in parentheses that all close right after it."""
        at = self.at
        while at < len(self.tokens) and self.tokens[at].string == "(" and at - self.at <= _MAX_NESTING:
            at += 1  # bounded: a megabyte of "(" must not be rescanned at every nesting level
        opened = at - self.at
        if at >= len(self.tokens) or self.tokens[at].type != tokenize.NUMBER:
            return False
        closed = 0
        while at + 1 + closed < len(self.tokens) and self.tokens[at + 1 + closed].string == ")":
            closed += 1
        return closed >= opened

    def bare_number(self, depth: int) -> int | float | complex:
        """A number, possibly in parentheses (``-(3)`` is ``UnaryOp(USub, Constant(3))``)."""
        opened = 0
        while self.peek() == "(":
            self.take()
            opened += 1
            if depth + opened > _MAX_NESTING:
                raise NotLiteral("too deeply nested")
        token = self.take()
        if token.type != tokenize.NUMBER:
            raise NotLiteral("a sign applies only to a number")
        for _ in range(opened):
            self.expect(")")
        return _number(token.string)

    def atom(self, depth: int) -> Any:
        if depth > _MAX_NESTING:
            raise NotLiteral("too deeply nested")
        token = self.take()
        kind, string = token.type, token.string
        if kind == tokenize.STRING:
            parts = [_string(string)]
            while self.at < len(self.tokens) and self.tokens[self.at].type == tokenize.STRING:
                parts.append(_string(self.take().string))
            if all(isinstance(p, str) for p in parts):
                return "".join(p for p in parts if isinstance(p, str))
            if all(isinstance(p, bytes) for p in parts):
                return b"".join(p for p in parts if isinstance(p, bytes))
            raise NotLiteral("cannot mix bytes and nonbytes literals")
        if kind == tokenize.NAME and string in ("True", "False", "None"):
            return {"True": True, "False": False, "None": None}[string]
        if kind == tokenize.NAME and string == "set" and self.peek() == "(":
            self.take()
            self.expect(")")
            return set()
        if kind == tokenize.OP and string == "...":
            return ...
        if kind == tokenize.OP and string in _CLOSING:
            return self.container(string, depth + 1)
        raise NotLiteral(f"{string!r} is not a literal")

    def container(self, opening: str, depth: int) -> Any:
        closing = _CLOSING[opening]
        items: list[Any] = []
        pairs: list[tuple[Any, Any]] = []
        comma = False
        kind = "dict" if opening == "{" else ("list" if opening == "[" else "tuple")
        while self.peek() != closing:
            item = self.value(depth)
            if opening == "{" and not items and not pairs and self.peek() != ":":
                kind = "set"
            if kind == "dict":
                self.expect(":")
                pairs.append((item, self.value(depth)))
            else:
                items.append(item)
            if self.peek() == ",":
                self.take()
                comma = True
            elif self.peek() != closing:
                raise NotLiteral(f"expected ',' or {closing!r}")
        self.take()
        try:
            if kind == "dict":
                return dict(pairs)
            if kind == "set":
                return set(items)
        except TypeError as exc:
            raise NotLiteral(f"unhashable: {exc}") from None
        if kind == "list":
            return items
        if not items and opening == "(":
            return ()
        return items[0] if len(items) == 1 and not comma else tuple(items)


def literal_eval(text: str) -> Any:
    """The value ``ast.literal_eval(text)`` returns; :class:`NotLiteral` wherever it raises."""
    tokens = tokens_of(text.lstrip(" \t"))
    if not tokens:
        raise NotLiteral("empty expression")
    parser = _Parser(tokens)
    result = parser.top()
    if parser.at != len(tokens):
        raise NotLiteral(f"text after the literal: {parser.peek()!r}")
    return result
