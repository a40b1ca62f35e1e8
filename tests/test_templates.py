"""The template model: parsing each style, the matching rule, render, and the placeholder check.

Round trips are checked against the real renderers (``str.format``, ``%``, ``string.Template``,
Jinja2) by property tests: whatever the renderer produced, the template matches it and renders
it back exactly.
"""

from __future__ import annotations

import string

import jinja2
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from opto_core.kernel.templates import STYLES, Template, TemplateError, check_placeholders, literal_fragments

SYSTEM = "You are the support agent of {company}. Today is {today}."


# ----- parsing ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, style, literals, placeholders",
    [
        (SYSTEM, "format", ("You are the support agent of ", ". Today is ", "."), ("company", "today")),
        ("{} and {}", "format", ("", " and ", ""), ("0", "1")),
        ("{1} then {0}", "format", ("", " then ", ""), ("1", "0")),
        ("x {name!r:>10} y", "format", ("x ", " y"), ("name",)),
        ("{user.name} / {rows[0]}", "format", ("", " / ", ""), ("user.name", "rows[0]")),
        ('JSON: {{"answer": "{answer}"}}', "format", ('JSON: {"answer": "', '"}'), ("answer",)),
        ("Hello {{ name }}!", "jinja", ("Hello ", "!"), ("name",)),
        ("Hi {{ user.name | upper }}", "jinja", ("Hi ", ""), ("user.name|upper",)),
        ("Dear %(name)s, 100%% sure", "printf", ("Dear ", ", 100% sure"), ("name",)),
        ("%s scored %.2f", "printf", ("", " scored ", ""), ("0", "1")),
        ("Hi $name, ${thing}s cost $$5", "dollar", ("Hi ", ", ", "s cost $5"), ("name", "thing")),
    ],
)
def test_each_style_is_split_into_literals_and_placeholders(text, style, literals, placeholders):
    template = Template.parse(text)
    assert template is not None and template.style == style
    assert template.literals == literals and template.placeholders == placeholders
    assert Template.parse(text, style) == template


@pytest.mark.parametrize(
    "text",
    [
        "Answer briefly.",
        "Save 50% off today",
        "Return JSON like {\"a\": 1}",
        "It costs $5",
        "Growth was 5%.",
        "{ not a field }",
        "{{ \"a\": 1 }}",
    ],
)
def test_text_without_placeholders_is_no_template(text):
    assert Template.parse(text) is None


def test_detection_order_is_format_then_jinja_then_printf_then_dollar():
    assert Template.parse("{a} and {{ b }}").style == "format"  # {{ }} are escaped braces in a format template
    assert Template.parse("{{ b }} and %s").style == "jinja"
    assert Template.parse("%(a)s and $b").style == "printf"
    assert Template.parse("Hi ${name}").style == "dollar"  # every field written ${...}: string.Template
    assert Template.parse("50% of {n}").style == "format"


def test_an_explicit_style_parses_only_that_style_and_says_what_is_wrong():
    assert Template.parse("{a} and $b", "dollar").placeholders == ("b",)
    assert Template.parse("no placeholder", "format") is None
    with pytest.raises(TemplateError, match="Single '}'"):
        Template.parse("oops } {a}", "format")
    with pytest.raises(TemplateError, match="mixes"):
        Template.parse("%(a)s and %s", "printf")
    with pytest.raises(TemplateError, match="never closed"):
        Template.parse("{% for x in xs %}{{ x }}", "jinja")
    with pytest.raises(TemplateError, match="automatic"):
        Template.parse("{} and {0}", "format")
    with pytest.raises(ValueError, match="unknown template style"):
        Template.parse("{a}", "mustache")


def test_jinja_blocks_are_wildcards_and_list_the_variables_they_read():
    template = Template.parse("{# rules #}{% for d in docs %}- {{ d.title }}\n{% endfor %}Q: {{ question }}\n")
    assert template.style == "jinja"
    assert template.placeholders == ("docs", "question")  # the loop variable d is the block's own
    assert template.literals == ("", "Q: ", "")  # the comment is gone, and the final newline (Jinja's default)
    found = template.match("- A\n- B\nQ: why?")
    assert found.values == {"question": "why?"}
    assert list(found.blocks.values()) == ["- A\n- B\n"]


def test_jinja_whitespace_control_trims_the_literals_as_jinja_does():
    source = "Hello   {{- name -}}   !\n  {%- if x %}yes{% endif %}"
    template = Template.parse(source)
    produced = jinja2.Template(source).render(name="Ann", x=True)
    assert template.literals[0] == "Hello" and template.match(produced).values == {"name": "Ann"}


# ----- matching ----------------------------------------------------------------------------------------------
def test_match_binds_values_and_spans_and_refuses_other_texts():
    template = Template.parse(SYSTEM)
    text = "You are the support agent of Acme. Today is Monday."
    found = template.match(text)
    assert found.values == {"company": "Acme", "today": "Monday"} and found.whole
    assert [(name, text[a:b]) for name, a, b in found.spans] == [("company", "Acme"), ("today", "Monday")]
    assert template.match("You are the support agent of Acme.") is None
    assert template.match("Hello. " + text) is None  # match is anchored; search is not
    inside = template.search("Hello. " + text + " Bye.")
    assert inside.values == found.values and inside.matched == text and not inside.whole


def test_the_rule_when_a_placeholder_could_bind_several_ways_is_leftmost_shortest():
    template = Template.parse("{a}, {b}")
    assert template.match("x, y, z").values == {"a": "x", "b": "y, z"}
    assert Template.parse("{a}{b}!").match("xy!").values == {"a": "", "b": "xy"}
    assert Template.parse("[{a}]").match("[]").values == {"a": ""}


def test_a_repeated_placeholder_must_bind_the_same_text():
    template = Template.parse("{name} asked; answer {name}.")
    assert template.match("Ann asked; answer Ann.").values == {"name": "Ann"}
    assert template.match("Ann asked; answer Bob.") is None


def test_matching_an_adversarial_long_text_does_linear_work():
    # a backtracking regex for "{a}x{b}x{c}x{d}y" on "x" * n takes O(n^4) steps; the rule here is one scan
    template = Template.parse("{a}x{b}x{c}x{d}y")
    text = "x" * 200_000
    assert template.match(text) is None and template.search(text) is None
    assert template.match(text + "y").values["d"] == "x" * (200_000 - 3)


# ----- rendering: match old -> values -> render new ------------------------------------------------------------
def test_a_new_version_is_filled_with_the_values_the_old_one_bound():
    old, new = Template.parse(SYSTEM), Template.parse("Support for {company} (date: {today}). Be brief.")
    produced = SYSTEM.format(company="Acme Corp", today="2026-12-08")
    assert new.render(old.match(produced).values) == "Support for Acme Corp (date: 2026-12-08). Be brief."
    with pytest.raises(TemplateError, match="no value for the placeholder {user}"):
        Template.parse("Hi {user}").render({"company": "x"})


def test_render_keeps_each_style_and_inserts_values_verbatim():
    assert Template.parse("n={n:>5}").render({"n": "  3.0"}) == "n=  3.0"  # already formatted: not padded again
    assert Template.parse("$who owes $$3").render({"who": "Ann"}) == "Ann owes $3"
    jinja = Template.parse("{% if x %}A{% endif %}-{{ y }}")
    match = jinja.match("A-b")
    assert jinja.render(match) == "A-b"  # a match carries its block texts too
    with pytest.raises(TemplateError, match="Jinja block"):
        jinja.render(match.values)


# ----- the check of a suggested new version ---------------------------------------------------------------------
def test_check_placeholders_names_what_was_dropped_or_invented():
    assert check_placeholders(SYSTEM, "Be kind. You help {company} customers; it is {today}.") == []
    assert check_placeholders(SYSTEM, "You help customers. Today is {today}.") == [
        "the template must keep {company}; the new value dropped it"
    ]
    [problem] = check_placeholders(SYSTEM, "You help {company} on {today} in {city}.")
    assert "adds {city}" in problem and "never fills" in problem
    [problem] = check_placeholders(SYSTEM, "You help %(company)s on %(today)s.")
    assert "dropped them" in problem and "str.format style" in problem
    [problem] = check_placeholders(SYSTEM, "You help {company on {today}.")
    assert "not a valid str.format template" in problem
    assert check_placeholders("{} and {}", "{}") == [
        "the template must keep {} (positional placeholder 2); the new value dropped it"
    ]
    assert check_placeholders("no placeholders here", "anything") == []


def test_literal_fragments_are_long_stripped_lines_longest_first():
    template = Template.parse(
        "You are a careful support agent.\nShort.\n{question}\n  Answer in one sentence please.  "
    )
    assert template.fragments(20) == ["You are a careful support agent.", "Answer in one sentence please."]
    assert literal_fragments(["a\nbb\nccc"], 2) == ["ccc", "bb"]


# ----- properties: the real renderers' output always matches and renders back -------------------------------------------
_NAMES = st.lists(st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True), min_size=1, max_size=4, unique=True)
_TEXT = st.text(alphabet="ab ,.:\n{}%$#", max_size=12)
_VALUE = st.text(alphabet="ab ,.:xyz{}%$", max_size=10)


def _source(style: str, literals: list[str], names: list[str]) -> str:
    escape = {
        "format": lambda s: s.replace("{", "{{").replace("}", "}}"),
        "printf": lambda s: s.replace("%", "%%"),
        "dollar": lambda s: s.replace("$", "$$"),
        "jinja": lambda s: s,
    }[style]
    field = {"format": "{%s}", "printf": "%%(%s)s", "dollar": "${%s}", "jinja": "{{ %s }}"}[style]
    return escape(literals[0]) + "".join(field % name + escape(literal) for name, literal in zip(names, literals[1:]))


def _real_render(style: str, source: str, values: dict[str, str]) -> str:
    if style == "format":
        return source.format(**values)
    if style == "printf":
        return source % values
    if style == "dollar":
        return string.Template(source).substitute(values)
    return jinja2.Template(source, keep_trailing_newline=True).render(**values)


@settings(max_examples=300, deadline=None)
@given(style=st.sampled_from(STYLES), names=_NAMES, data=st.data())
def test_render_then_match_round_trips_against_the_real_renderer(style, names, data):
    literals = data.draw(st.lists(_TEXT, min_size=len(names) + 1, max_size=len(names) + 1))
    if style == "jinja":  # Jinja would read "{{", "{%" or "{#" in a literal as syntax
        literals = [literal.replace("{", "(") for literal in literals]
        assume(not literals[-1].endswith("\n"))
    values = {name: data.draw(_VALUE) for name in names}
    template = Template.parse(_source(style, literals, names), style)
    rendered = template.render(values)
    assert rendered == _real_render(style, _source(style, literals, names), values)
    found = template.match(rendered)
    assert found is not None and template.render(found.values) == rendered
    # the values themselves come back when none of them contains the literal that follows it
    follows = template.literals[1:]
    if all((values[n] + lit).find(lit) == len(values[n]) for n, lit in zip(names, follows) if lit) and all(
        lit or k == len(names) - 1 for k, lit in enumerate(follows)
    ):
        assert found.values == values
    assert template.search("prefix>" + rendered + "<suffix") is not None


# ----- a template parameter: the optimizer sees the constraint and gets the reason back ---------------------------------
def test_a_template_parameter_shows_its_placeholders_and_refuses_a_suggestion_that_drops_one():
    import json

    from opto_core import Feedback, Graph, InvalidValue, Parameter, backward
    from opto_core.optimizers.optoprime import OptoPrime
    from opto_core.testing import ScriptedLLM

    system = Parameter("agent.system", "text", SYSTEM, template=True)
    assert system.spec()["template"] == {"style": "format", "placeholders": ["company", "today"]}
    with pytest.raises(InvalidValue, match=r"must keep \{company\}; the new value dropped it"):
        system.validate("You help customers. Today is {today}.")
    with pytest.raises(ValueError, match="no placeholder"):
        Parameter("plain", "text", "No placeholders here.", template=True)
    with pytest.raises(ValueError, match="only a text parameter"):
        Parameter("n", "int", 3, template=True)

    graph = Graph()
    param = graph.add_parameter(system)
    call = graph.add("op", "llm", "answer", parents=[(param.id, "system")])
    graph.mark_output(call.id)
    llm = ScriptedLLM(
        [
            json.dumps({"reasoning": "shorter", "suggestion": {"agent.system": "Be brief."}}),
            json.dumps(
                {
                    "reasoning": "keep them",
                    "suggestion": {"agent.system": "Support agent of {company} ({today}). Be brief."},
                }
            ),
        ]
    )
    proposal = OptoPrime([system], llm).step(backward(graph, Feedback(0.0, "too long")))
    prompt = llm.requests[0]["messages"][1]["content"]
    assert "keep the placeholders {company}, {today} and add no other" in prompt
    retry = llm.requests[1]["messages"][-1]["content"]
    assert "the template must keep {company}, {today}; the new value dropped them" in retry
    assert proposal.accepted == {"agent.system": "Support agent of {company} ({today}). Be brief."}
    copied = system.copy(value="Agent of {company} on {today}.")  # a copy keeps the original placeholders
    with pytest.raises(InvalidValue):
        copied.validate("Agent of {company}.")


def test_after_a_write_provenance_matches_the_text_the_new_template_produces():
    """The optimizer rewrote the literal parts: the next run's filled-in text is still credited to the parameter."""
    from opto_core import Parameter
    from opto_core.kernel.provenance import ProvenanceIndex

    system = Parameter("agent.system", "text", SYSTEM, template=True)
    system.value = "Support for {company} ({today}): be brief."
    assert system.current_template().text == system.value and system.template_model.text == SYSTEM
    index = ProvenanceIndex()
    index.register_parameter(system, "param:agent.system")
    (match,) = index.find_all("Support for ACME (Monday): be brief.")
    assert (match.node, match.how) == ("param:agent.system", "template")
    assert index.find_all(SYSTEM.format(company="ACME", today="Monday")) == []  # the old text is no longer its output
