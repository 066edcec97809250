"""Email templates (C2): Jinja2 in its immutable sandbox. Pure: no ORM.

A template sees the recipient's profile as the plain values of FIELDS and nothing else: no
loader (no include, import or extends), no object of ours, no attribute of Python's internals
(the sandbox), no mutation of what it is given (the immutable sandbox). A template is checked
when it is saved: its syntax, that it only names these fields, and that it renders for a
sample recipient; each problem comes with its line.
"""

from __future__ import annotations

import traceback
from datetime import UTC, datetime
from decimal import Decimal
from functools import lru_cache

from jinja2 import Template, TemplateError, TemplateSyntaxError, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

# What a template may name, with what it holds (docs/email.md).
FIELDS = {
    "email": "the recipient's address",
    "visits": "visits so far",
    "page_views": "pages viewed",
    "purchases": "orders so far",
    "total_spent": "money spent, a decimal",
    "average_order_value": "average order, a decimal",
    "source": "how they first came: direct, referral, search, campaign or email",
    "top_category": "the category they viewed most, or empty",
    "first_seen_at": "first visit, a date and time",
    "last_seen_at": "last visit, a date and time",
    "attributes": "custom attributes (imports, the tag): attributes.first_name",
    "unsubscribe_url": "the recipient's own unsubscribe address",
}
SAMPLE = {
    "email": "pat@example.com",
    "visits": 3,
    "page_views": 12,
    "purchases": 1,
    "total_spent": Decimal("59.90"),
    "average_order_value": Decimal("59.90"),
    "source": "search",
    "top_category": "shoes",
    "first_seen_at": datetime(2026, 1, 5, 9, 30, tzinfo=UTC),
    "last_seen_at": datetime(2026, 3, 2, 18, 10, tzinfo=UTC),
    "attributes": {"first_name": "Pat"},
    "unsubscribe_url": "https://example.com/e/u/sample",
}
TEMPLATE_NAME = "<email template>"
# Jinja's own names inside a template: a loop's counters.
TEMPLATE_NAMES = {"loop"}
# A template is saved by a marketer and rendered by a web worker: no arithmetic that could
# take the process's time or memory (9**9**9, "x" * 10**10).
MAX_EXPONENT = 64
MAX_REPEAT_LENGTH = 100_000


class _Environment(ImmutableSandboxedEnvironment):
    # Intercepted operators are also never computed ahead at compile time.
    intercepted_binops = frozenset({"**", "*"})

    def call_binop(self, context, operator, left, right):
        if operator == "**" and isinstance(right, (int, float)) and abs(right) > MAX_EXPONENT:
            raise SecurityError(f"an exponent above {MAX_EXPONENT}")
        if operator == "*":
            for sequence, count in ((left, right), (right, left)):
                if (
                    isinstance(sequence, (str, list, tuple))
                    and isinstance(count, int)
                    and len(sequence) * count > MAX_REPEAT_LENGTH
                ):
                    raise SecurityError(f"a repetition longer than {MAX_REPEAT_LENGTH}")
        return super().call_binop(context, operator, left, right)


_ENVIRONMENTS = {
    is_html: _Environment(autoescape=is_html, keep_trailing_newline=True)
    for is_html in (True, False)
}
_INCLUDES = (nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport)


class TemplateProblem(ValueError):
    pass


def template_check(source: str, *, is_html: bool) -> list[str]:
    """Every problem of a template, as "line N: what", or [] when it is fine."""
    environment = _ENVIRONMENTS[is_html]
    try:
        tree = environment.parse(source, name=TEMPLATE_NAME)
    except TemplateSyntaxError as error:
        return [f"line {error.lineno}: {error.message}"]
    problems = [
        f"line {node.lineno}: a template cannot include, import or extend another"
        for node in tree.find_all(_INCLUDES)
    ]
    defined = {node.name for node in tree.find_all(nodes.Name) if node.ctx in ("store", "param")}
    problems += [
        f"line {node.lineno}: unknown field {node.name!r} (the fields are: {', '.join(FIELDS)})"
        for node in tree.find_all(nodes.Name)
        if node.ctx == "load"
        and node.name not in FIELDS
        and node.name not in defined
        and node.name not in TEMPLATE_NAMES
    ]
    problems += [
        f"line {node.lineno}: {node.attr!r} is not a field (names starting with _ are refused)"
        for node in tree.find_all(nodes.Getattr)
        if node.attr.startswith("_")
    ]
    if problems:
        return problems
    try:
        template_render(source, SAMPLE, is_html=is_html)
    except ArithmeticError as error:  # decimal's messages are its exception classes
        return [f"line {_line_of(error)}: cannot compute this ({type(error).__name__})"]
    except (TemplateError, TypeError, ValueError) as error:
        return [f"line {_line_of(error)}: {error}"]
    return []


@lru_cache(maxsize=64)
def _compiled(source: str, is_html: bool) -> Template:
    return _ENVIRONMENTS[is_html].from_string(source)


def template_render(source: str, context: dict, *, is_html: bool) -> str:
    """The template rendered with these fields; raises what the template raises."""
    return _compiled(source, is_html).render(context)


def _line_of(error: BaseException) -> int | str | None:
    # Jinja rewrites tracebacks so that the template's own frames name its lines.
    lines = [
        frame.lineno
        for frame in traceback.extract_tb(error.__traceback__)
        if frame.filename in (TEMPLATE_NAME, "<template>")
    ]
    return lines[-1] if lines else "?"
