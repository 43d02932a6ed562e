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

from jinja2 import StrictUndefined, nodes
from jinja2.exceptions import SecurityError, TemplateError, TemplateSyntaxError, UndefinedError
from jinja2.sandbox import ImmutableSandboxedEnvironment

TEMPLATE_VARIABLES = ("first_name", "name", "product_name", "campaign_name", "article_type")
ALLOWED_FILTERS = ("upper", "lower", "title", "capitalize", "trim", "default", "truncate", "e", "escape")
MAX_TEMPLATE_LENGTH = 4000

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


def template_problem(text: str | None) -> str | None:
    """Why a template is refused (``"unsafe_template: ..."``), or None when it is safe to render."""
    if text is None or text == "":
        return "unsafe_template: empty template"
    if len(text) > MAX_TEMPLATE_LENGTH:
        return f"unsafe_template: longer than {MAX_TEMPLATE_LENGTH} characters"
    try:
        tree = _environment().parse(text)
    except TemplateSyntaxError as error:
        return f"unsafe_template: syntax error at line {error.lineno}: {error.message}"
    for node in tree.find_all(nodes.Node):
        if not isinstance(node, _ALLOWED_NODES):
            return (
                f"unsafe_template: {type(node).__name__.lower()} is not allowed (only {{{{ variable }}}} and filters)"
            )
        if isinstance(node, nodes.Name) and node.name not in TEMPLATE_VARIABLES:
            return f"unsafe_template: unknown variable {node.name!r} (allowed: {', '.join(TEMPLATE_VARIABLES)})"
        if isinstance(node, nodes.Filter) and node.name not in ALLOWED_FILTERS:
            return f"unsafe_template: filter {node.name!r} is not allowed"
    return None


def render(template: str, variables: Mapping[str, str]) -> str:
    """Render a template that passed ``template_problem``; raises ``UnsafeTemplateError`` otherwise.

    Variables outside the whitelist are dropped before rendering, so a caller cannot widen what
    a template sees by passing more.
    """
    problem = template_problem(template)
    if problem:
        raise UnsafeTemplateError(problem)
    context = {name: str(variables.get(name, "")) for name in TEMPLATE_VARIABLES}
    try:
        return _environment().from_string(template).render(context).strip()
    except (SecurityError, UndefinedError, TemplateError) as error:
        raise UnsafeTemplateError(f"unsafe_template: {error}") from error
