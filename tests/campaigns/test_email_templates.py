"""Email templates (C2): checked at save with the line of each problem, sandboxed."""

import pytest
from django.core.exceptions import ValidationError
from jinja2.exceptions import SecurityError

from campaigns.mailtemplates import SAMPLE, template_check, template_render
from tests.factories import ClientFactory, EmailCampaignFactory


def test_a_good_template_renders_the_profile_fields_it_names():
    source = (
        "Hi {{ attributes.first_name }},\n"
        "{% if purchases %}thanks for {{ purchases }} order(s){% endif %}"
    )

    assert template_check(source, is_html=False) == []
    assert template_render(source, SAMPLE, is_html=False) == "Hi Pat,\nthanks for 1 order(s)"


def test_a_syntax_error_names_its_line():
    assert template_check("Hello\n{% if visits %}\nno end", is_html=False) == [
        "line 2: Unexpected end of template. Jinja was looking for the following tags: "
        "'elif' or 'else' or 'endif'. The innermost block that needs to be closed is 'if'."
    ]


def test_a_name_that_is_not_a_field_is_refused_with_its_line():
    problems = template_check("Hi\n{{ request.user }} {{ settings }}", is_html=True)

    assert [problem.split(" (the fields")[0] for problem in problems] == [
        "line 2: unknown field 'request'",
        "line 2: unknown field 'settings'",
    ]


def test_loop_variables_are_allowed():
    assert template_check("{% for name in attributes %}{{ name }}{% endfor %}", is_html=False) == []


def test_a_template_cannot_include_or_reach_python_internals():
    assert template_check('{% include "x.html" %}', is_html=True) == [
        "line 1: a template cannot include, import or extend another"
    ]
    assert template_check("{{ email.__class__ }}", is_html=False) == [
        "line 1: '__class__' is not a field (names starting with _ are refused)"
    ]
    # Past the check, the sandbox still refuses what a template could try at render time.
    with pytest.raises(SecurityError):
        template_render("{{ attributes.clear() }}", {"attributes": {"a": 1}}, is_html=False)


def test_an_error_at_render_time_names_its_line():
    assert template_check("ok\n\n{{ total_spent / 0 }}", is_html=False) == [
        "line 3: cannot compute this (DivisionByZero)"
    ]
    assert template_check("ok\n{{ visits + email }}", is_html=False) == [
        "line 2: unsupported operand type(s) for +: 'int' and 'str'"
    ]


def test_html_templates_escape_profile_values():
    rendered = template_render(
        "<p>{{ attributes.first_name }}</p>",
        {"attributes": {"first_name": "<b>x</b>"}},
        is_html=True,
    )

    assert rendered == "<p>&lt;b&gt;x&lt;/b&gt;</p>"


@pytest.mark.django_db
def test_a_campaign_with_a_bad_template_is_refused_at_save():
    campaign = EmailCampaignFactory.build(
        client=ClientFactory(), subject="Hello {{ nobody }}", html_body="<p>\n{% for %}</p>"
    )

    with pytest.raises(ValidationError) as refused:
        campaign.full_clean()

    errors = refused.value.message_dict
    assert errors["subject"][0].startswith("line 1: unknown field 'nobody' (the fields are: email,")
    assert errors["html_body"] == ["line 2: Expected an expression, got 'end of statement block'"]


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        ("{{ 2 ** 100000000 }}", "line 1: an exponent above 64"),
        ('{{ "x" * 10 ** 10 }}', "line 1: a repetition longer than 100000"),
    ],
)
def test_a_template_cannot_take_the_workers_time_or_memory(source, problem):
    assert template_check(source, is_html=False) == [problem]


def test_a_loops_counter_is_allowed():
    source = "{% for name in attributes %}{{ loop.index }}. {{ name }}{% endfor %}"

    assert template_check(source, is_html=False) == []
