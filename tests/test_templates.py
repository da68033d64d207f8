"""Templates: plain ones render without Jinja exactly as Jinja would; every one is bounded."""

from __future__ import annotations

import gc
import json
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from messaging.content.alert import STORED, Alert, parse_alert
from messaging.content.render_budget import RENDER_TIMEOUT_S
from messaging.content.templates import (
    SMS_RENDERED_MAX_CHARS,
    RenderError,
    _compile,
    check_template,
    plain_parts,
    render,
    template_names,
)
from messaging.errors import InputError

FIELDS = ("first_name", "last_name", "postal_code")
literal = st.text(alphabet=st.characters(blacklist_characters="{}%#"), max_size=20)
value = st.one_of(st.text(max_size=12), st.integers(), st.none())


@given(
    pieces=st.lists(st.one_of(literal, st.sampled_from(FIELDS)), max_size=6),
    values=st.fixed_dictionaries(dict.fromkeys(FIELDS, value)),
    html=st.booleans(),
    trailing_newline=st.booleans(),
)
def test_plain_templates_render_as_jinja_would(
    pieces: list[str], values: dict[str, object], html: bool, trailing_newline: bool
) -> None:
    source = "".join(f"{{{{ {p} }}}}" if p in FIELDS else p for p in pieces)
    source += "\n" if trailing_newline else ""
    assert plain_parts(source) is not None
    assert render(source, values, html=html) == str(_compile(source, html).render(values))


def test_templates_with_logic_go_through_jinja_and_missing_fields_fail() -> None:
    assert plain_parts("Hi {{ first_name | upper }}") is None
    assert plain_parts("{% if first_name %}Hi{% endif %}") is None
    assert render("Hi {{ first_name | upper }}", {"first_name": "ann"}) == "Hi ANN"
    for source in ("Hi {{ nickname }}", "Hi {{ nickname | upper }}"):
        with pytest.raises(RenderError, match="nickname"):
            render(source, {"first_name": "ann"})


@pytest.mark.parametrize(
    ("source", "names"),
    [
        ("Hi {{ first_name }}", {"first_name"}),
        ("{{ fields.ward }} {{ fields['union'] | upper }}", {"fields"}),
        (
            "{% set state = 'PA' %}{{ state }}{% for x in [last_name] %}{{ x }}{% endfor %}",
            {"last_name"},
        ),
        ("{% if timezone %}{{ external_id }}{% endif %}", {"timezone", "external_id"}),
        ("no fields at all", set()),
    ],
)
def test_template_names_are_the_fields_a_template_can_read(source: str, names: set[str]) -> None:
    assert template_names(source) == names


def test_template_names_are_unknown_for_a_template_that_does_not_parse() -> None:
    assert template_names("Hi {{ first_name") is None


# --- limits: a publisher's template cannot take the fleet's memory or time (issue #16) -------

HOSTILE = {
    "repeat": "{{ 'x' * 400000000 }}",
    "power": "{{ 2 ** 100000000 }}",
    "big range": "{% for i in range(100000) %}{% endfor %}",
    "nested loops": "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}",
    "center filter": "{{ 'x'|center(1000000000) }}",
    "center method": "{{ 'x'.center(1000000000) }}",
    "format filter width": "{{ '%1000000000s'|format('x') }}",
    "percent width": "{{ '%1000000000s' % 'x' }}",
    "brace width": "{{ '{:>1000000000}'.format('x') }}",
    "doubling namespace": "{% set ns = namespace(s='x'*1000) %}{% for i in range(100) %}"
    "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}",
    "doubling macro": "{% macro d(s) %}{{ d(s ~ s) }}{% endmacro %}{{ d('x') }}",
    "join of copies": "{{ (['x' * 1000] * 1000)|join }}",
    "replace blow-up": "{{ ('x' * 1000)|replace('', 'x' * 1000) }}",
    "deep nesting": "{{ " + "(" * 300 + "1" + ")" * 300 + " }}",
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_templates_are_refused_at_validation_and_fail_fast_at_render(name: str) -> None:
    # Given a template built to exhaust memory or time (each took seconds to minutes, or
    # hundreds of MB, before the limits)
    source = HOSTILE[name]
    # When an alert carries it, then validation refuses it with a reason, within a second
    started = time.monotonic()
    with pytest.raises(InputError, match=r"sms\.body: template"):
        parse_alert(f'{{"alert_id": "a", "sms": {{"body": {json_str(source)}}}}}', fallback_id="a")
    assert time.monotonic() - started < 1.0
    # and rendering it for a supporter fails that one message quickly, never the process
    started = time.monotonic()
    with pytest.raises(RenderError):
        render(source, {"first_name": "Ann"})
    assert time.monotonic() - started < 1.0


def json_str(text: str) -> str:
    return json.dumps(text)


def test_an_email_template_over_its_limit_is_refused_naming_the_part() -> None:
    # Given an email whose HTML would render to more than the email limit
    doc = {"alert_id": "a", "email": {"subject": "s", "html": "{{ 'x' * 99999 }}{{ 'y' * 99 }}x"}}
    with pytest.raises(InputError, match=r"email\.html: template over a limit"):
        parse_alert(json.dumps(doc), fallback_id="a")


def test_rendered_text_is_capped_per_channel_and_the_render_time_per_recipient() -> None:
    # Given a template whose length depends on the supporter's field
    source = "{% for i in range(n) %}x{% endfor %}"
    assert render(source, {"n": SMS_RENDERED_MAX_CHARS}, max_chars=SMS_RENDERED_MAX_CHARS)
    with pytest.raises(RenderError, match="longer than 1600"):
        render(source, {"n": SMS_RENDERED_MAX_CHARS + 1}, max_chars=SMS_RENDERED_MAX_CHARS)
    # a plain template with a huge field is capped too
    with pytest.raises(RenderError, match="longer than 1600"):
        render("Hi {{ first_name }}", {"first_name": "x" * 2000}, max_chars=1600)
    # and a loop that outputs nothing still stops at the deadline
    slow = "{% for i in range(n) %}{% for j in range(n) %}{% endfor %}{% endfor %}"
    started = time.monotonic()
    with pytest.raises(RenderError, match="longer than"):
        render(slow, {"n": 10_000})
    assert time.monotonic() - started < RENDER_TIMEOUT_S * 10


def test_ordinary_templates_still_work_with_the_limits() -> None:
    source = (
        "{% for i in range(3) %}{{ i }}{% endfor %} {{ 'ab' ~ first_name }} {{ 5 * 3 }} "
        "{{ '%05d' % 42 }} {{ first_name|center(9) }} {{ '{:>4}'.format(7) }} {{ 2 ** 10 }}"
    )
    check_template(source, "sms.body")
    assert render(source, {"first_name": "Ann"}) == "012 abAnn 15 00042    Ann       7 1024"


def test_attr_format_cannot_escape_the_sandbox(monkeypatch: pytest.MonkeyPatch) -> None:
    # Jinja2 3.1.5 let |attr('format') reach str.format unwrapped (CVE-2025-27516), and a
    # format string walking from cycler to os.environ printed the sender's Twilio token.
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "twilio-secret-0123456789")
    for source in (
        "{{ '{0.__init__.__globals__[os].environ[TWILIO_AUTH_TOKEN]}'|attr('format')(cycler) }}",
        "{{ '{0.__init__.__globals__}'|attr('format')(cycler) }}",
        "{{ cycler.__init__.__globals__.os.environ.TWILIO_AUTH_TOKEN }}",
    ):
        with pytest.raises(RenderError, match="unsafe"):
            render(source, {})


def test_jinja2_is_at_least_3_1_6() -> None:
    import jinja2

    assert tuple(int(p) for p in jinja2.__version__.split(".")[:3]) >= (3, 1, 6)


def test_a_stored_alert_reads_back_without_rendering_its_templates_again() -> None:
    # Given an alert whose templates pass only a check that renders them (a loop that runs
    # past the render limit), as a stored row would hold it had the limit changed since or
    # had a garbage collection stopped a sample render (the limit is CPU time)
    slow = "{% for i in range(9999) %}{% for j in range(9999) %}{% endfor %}{% endfor %}"
    raw = json.dumps(
        {
            "alert_id": "stored-1",
            "topic": "t",
            "sms": {"body": "Hi " + slow},
            "email": {"subject": "Hi", "text": slow},
        }
    )
    # When it is validated as a new alert, then the render limit refuses it
    with pytest.raises(ValidationError, match="template over a limit"):
        Alert.model_validate_json(raw)
    # When the store reads it back, then it is the same alert (no render refused it)
    alert = Alert.model_validate_json(raw, context=STORED)
    assert alert.sms is not None and alert.sms.body == "Hi " + slow
    assert alert.email is not None and alert.email.text == slow
    # And the checks that cost nothing still hold for stored rows
    with pytest.raises(ValidationError, match="email needs text or html"):
        Alert.model_validate_json(
            json.dumps({"alert_id": "s", "topic": "t", "email": {"subject": "Hi"}}),
            context=STORED,
        )


def test_a_garbage_collection_inside_a_render_does_not_count_against_its_limit() -> None:
    # Given a heap large enough that a full collection takes longer than a render may, and a
    # template that renders a supporter's field through Jinja (not the plain-text path)
    heap = [[i] for i in range(1_500_000)]
    started = time.thread_time()
    gc.collect()
    collection_s = time.thread_time() - started
    assert collection_s > RENDER_TIMEOUT_S, f"the heap collects in {collection_s:.3f} s"

    class Collecting:
        """A field whose value triggers a full collection as it is printed."""

        def __str__(self) -> str:
            gc.collect()
            return "Pat"

    # When a collection runs inside the render, then it is not the template's CPU: it renders
    assert render("{{ first_name | upper }}!", {"first_name": Collecting()}) == "PAT!"
    del heap
