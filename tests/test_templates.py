"""Plain templates are rendered without Jinja: the text must be exactly what Jinja gives."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from messaging.templates import RenderError, _compile, plain_parts, render

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
