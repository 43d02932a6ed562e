"""Campaign templates: checked when a campaign is ingested, rendered in a sandbox when sent.

Campaign owners write templates such as ``"Hi {{ first_name }}, {{ product_name }} is back"``.
Templates are data from outside the platform, so they may only name whitelisted variables and
apply a few harmless filters: no attribute or item access, no calls, no loops, no imports. An
unsafe template is refused at ingestion (quarantined with the reason), never at 3 a.m. at send
time; rendering still uses Jinja2's SandboxedEnvironment as a second line of defence.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, nodes
from jinja2.exceptions import SecurityError, TemplateError, TemplateSyntaxError, UndefinedError
from jinja2.sandbox import ImmutableSandboxedEnvironment

TEMPLATE_VARIABLES = ("first_name", "name", "product_name", "campaign_name", "article_type")
ALLOWED_FILTERS = ("upper", "lower", "title", "capitalize", "trim", "default", "truncate", "e", "escape")
MAX_TEMPLATE_LENGTH = 4000
# Brackets nested deeper than this are refused before Jinja's recursive parser sees them (about
# 70 nested parentheses used to raise RecursionError inside the Spark check).
MAX_NESTING_DEPTH = 16
# A checked template rendered against the sample context may not grow beyond this.
MAX_RENDERED_LENGTH = 8000
SAMPLE_CONTEXT = {name: "Sample " + name.replace("_", " ") for name in TEMPLATE_VARIABLES}

# Only these node types may appear: plain output of variables, constants and whitelisted filters.
_ALLOWED_NODES = (nodes.Template, nodes.Output, nodes.TemplateData, nodes.Name, nodes.Const, nodes.Filter)


class UnsafeTemplateError(ValueError):
    """A template that may not be rendered; the message names the problem."""


@lru_cache(maxsize=1)
def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
    env.filters = {name: env.filters[name] for name in ALLOWED_FILTERS}
    env.globals = {}
    return env


def nesting_depth(text: str) -> int:
    """The deepest nesting of ``(``, ``[`` and ``{`` in ``text`` (counted on the raw text, so a
    bracket inside a string literal counts too: conservative, and linear time)."""
    depth = deepest = 0
    for char in text:
        if char in "([{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in ")]}":
            depth = max(0, depth - 1)
    return deepest


def template_problem(text: str | None) -> str | None:
    """Why a template is refused (``"unsafe_template: ..."``), or None when it is safe to render.

    Never raises: length and nesting are bounded before parsing, the tree may hold only
    variables, constants and whitelisted filters with constant arguments, and the template must
    render against ``SAMPLE_CONTEXT`` to at most ``MAX_RENDERED_LENGTH`` characters.
    """
    if text is None or text == "":
        return "unsafe_template: empty template"
    if len(text) > MAX_TEMPLATE_LENGTH:
        return f"unsafe_template: longer than {MAX_TEMPLATE_LENGTH} characters"
    depth = nesting_depth(text)
    if depth > MAX_NESTING_DEPTH:
        return f"unsafe_template: brackets nested {depth} deep (at most {MAX_NESTING_DEPTH})"
    try:
        tree = _environment().parse(text)
    except TemplateSyntaxError as error:
        return f"unsafe_template: syntax error at line {error.lineno}: {error.message}"
    except (RecursionError, MemoryError):
        return "unsafe_template: too deeply nested to parse"
    for node in tree.find_all(nodes.Node):
        if not isinstance(node, _ALLOWED_NODES):
            return (
                f"unsafe_template: {type(node).__name__.lower()} is not allowed (only {{{{ variable }}}} and filters)"
            )
        if isinstance(node, nodes.Name) and node.name not in TEMPLATE_VARIABLES:
            return f"unsafe_template: unknown variable {node.name!r} (allowed: {', '.join(TEMPLATE_VARIABLES)})"
        if isinstance(node, nodes.Filter) and node.name not in ALLOWED_FILTERS:
            return f"unsafe_template: filter {node.name!r} is not allowed"
        if isinstance(node, nodes.Filter):
            problem = _filter_arguments_problem(node)
            if problem:
                return problem
    try:
        rendered = _environment().from_string(text).render(SAMPLE_CONTEXT)
    except (SecurityError, UndefinedError, TemplateError, TypeError, ValueError, RecursionError) as error:
        return f"unsafe_template: does not render: {type(error).__name__}"
    if len(rendered) > MAX_RENDERED_LENGTH:
        return f"unsafe_template: renders to {len(rendered)} characters (at most {MAX_RENDERED_LENGTH})"
    return None


def _filter_arguments_problem(node: nodes.Filter) -> str | None:
    """Filter arguments must be constants; ``truncate`` lengths and ``default`` texts are bounded."""
    arguments = [*node.args, *(keyword.value for keyword in node.kwargs)]
    if node.dyn_args is not None or node.dyn_kwargs is not None:
        return f"unsafe_template: filter {node.name!r} takes no */** arguments"
    for argument in arguments:
        if not isinstance(argument, nodes.Const):
            return f"unsafe_template: filter {node.name!r} arguments must be constants"
        value = argument.value
        if isinstance(value, int | float) and not isinstance(value, bool) and not 0 <= value <= MAX_RENDERED_LENGTH:
            return f"unsafe_template: filter {node.name!r} argument {value} out of range 0-{MAX_RENDERED_LENGTH}"
        if isinstance(value, str) and len(value) > MAX_TEMPLATE_LENGTH:
            return f"unsafe_template: filter {node.name!r} argument too long"
    return None


@lru_cache(maxsize=1024)
def _checked(template: str) -> tuple[str | None, Any]:
    """A template's check and compiled form, once per distinct text (dispatch renders the same
    campaign's templates for every recipient: checking and compiling each time cost 6 ms a message)."""
    problem = template_problem(template)
    return problem, None if problem else _environment().from_string(template)


def render(template: str, variables: Mapping[str, str]) -> str:
    """Render a template that passed ``template_problem``; raises ``UnsafeTemplateError`` otherwise.

    Variables outside the whitelist are dropped before rendering, so a caller cannot widen what
    a template sees by passing more.
    """
    problem, compiled = _checked(template)
    if problem:
        raise UnsafeTemplateError(problem)
    context = {name: str(variables.get(name, "")) for name in TEMPLATE_VARIABLES}
    try:
        return compiled.render(context).strip()
    except (SecurityError, UndefinedError, TemplateError) as error:
        raise UnsafeTemplateError(f"unsafe_template: {error}") from error
