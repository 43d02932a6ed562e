"""Templates are data from campaign owners: only whitelisted variables and filters may run."""

import pytest

from include.notify.stages.templates import UnsafeTemplateError, render, template_problem


def test_safe_template_renders_with_user_data() -> None:
    text = "Hi {{ first_name }}, {{ product_name | title }} is back in stock"
    assert template_problem(text) is None
    assert render(text, {"first_name": "Asha", "product_name": "navy blue shirt"}) == (
        "Hi Asha, Navy Blue Shirt is back in stock"
    )


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("{{ first_name.__class__ }}", "getattr"),
        ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "call"),
        ("{{ first_name['x'] }}", "getitem"),
        ("{{ range(10) }}", "call"),
        ("{% for x in name %}{{ x }}{% endfor %}", "for"),
        ("{{ password_hash }}", "unknown variable 'password_hash'"),
        ("{{ name | attr('x') }}", "filter 'attr'"),
        ("{% import 'os' as os %}", "import"),
        ("{{ unclosed", "syntax error"),
        ("", "empty"),
    ],
)
def test_unsafe_templates_are_refused_with_the_reason(text: str, reason: str) -> None:
    problem = template_problem(text)
    assert problem is not None
    assert problem.startswith("unsafe_template")
    assert reason in problem
    with pytest.raises(UnsafeTemplateError):
        render(text, {"first_name": "x"})


def test_extra_variables_passed_by_the_caller_are_not_visible() -> None:
    with pytest.raises(UnsafeTemplateError):
        render("{{ email }}", {"email": "a@b.c"})
