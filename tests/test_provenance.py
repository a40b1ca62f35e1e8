"""The provenance index: each rule, the order of rules, ties, limits, threads."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opto_core.kernel import provenance
from opto_core.kernel.graph import Edge, Graph
from opto_core.kernel.provenance import (
    CONTAINS,
    IDENTITY,
    KEY,
    MIN_TEXT,
    PARTIAL,
    TEMPLATE,
    TYPED,
    VALUE,
    Match,
    ProvenanceIndex,
    TaggedFloat,
    TaggedInt,
    TaggedStr,
    tagged_node,
    untag,
)


class Message:
    """A framework object with an id and a text, like a chat message."""

    def __init__(self, content: str, id: str | None = None) -> None:
        self.content, self.id = content, id


def test_identity_finds_the_very_object_and_not_an_equal_copy():
    index = ProvenanceIndex()
    produced = {"rows": [1, 2]}
    index.register(produced, "a")
    assert index.find(produced) == Match("a", IDENTITY)
    assert index.find({"rows": [1, 2]}) is None  # equal but another object, no text: unknown


def test_identity_most_recent_producer_wins():
    index = ProvenanceIndex()
    obj = [1, 2, 3]
    index.register(obj, "a")
    index.register(obj, "relay")  # a step that returned its input unchanged
    assert index.node_of(obj) == "relay"


def test_tags_carry_the_node_and_behave_like_the_plain_value():
    index = ProvenanceIndex()
    text, number, real = index.tag("Paris", "a"), index.tag(7, "b"), index.tag(2.5, "c")
    assert (type(text), type(number), type(real)) == (TaggedStr, TaggedInt, TaggedFloat)
    assert text == "Paris" and hash(text) == hash("Paris") and number + 1 == 8 and real * 2 == 5.0
    assert (index.node_of(text), index.node_of(number), index.node_of(real)) == ("a", "b", "c")
    assert type(untag(text)) is str and type(untag(number)) is int and untag([1]) == [1]
    assert tagged_node(number) == "b" and tagged_node(7) is None
    assert index.tag(True, "d") is True and index.tag(None, "d") is None  # cannot be tagged


def test_a_tag_beats_text_and_a_tag_from_another_index_is_only_text():
    index, other = ProvenanceIndex(), ProvenanceIndex()
    index.register("same text", "older")
    tagged = index.tag("same text", "tagger")
    index.register("same text", "newest")  # the newest text producer...
    assert index.find(tagged) == Match("tagger", IDENTITY)  # ...does not beat the tag
    foreign = other.tag("same text", "elsewhere")
    assert index.find(foreign) == Match("newest", VALUE)


def test_numbers_and_short_texts_are_never_matched_by_value():
    index = ProvenanceIndex()
    for value in (42, 4.2, True, None, "yes", "  ab  "):
        index.register(value, "n")
    assert all(index.find(v) is None for v in (42, 4.2, True, None, "yes", "  ab  "))
    short = "x" * (MIN_TEXT - 1)
    index.register(short, "s")
    assert index.find(short) is None and index.find(f"{short}!") is None
    index.register("x" * MIN_TEXT, "ok")
    assert index.node_of("x" * MIN_TEXT) == "ok"


def test_strings_are_followed_by_identity_only_when_asked():
    index = ProvenanceIndex()
    literal = "no"  # interned: any other "no" is the same object
    index.register(literal, "a")
    assert index.find("no") is None
    passed_in = "".join(["q", "0"])  # a short input the tracer cannot replace by a tagged copy
    index.register(passed_in, "input", identity=True)
    assert index.find(passed_in) == Match("input", IDENTITY)
    assert index.find("".join(["q", "0"])) is None  # an equal string made elsewhere is another object


def test_keys_first_producer_wins_and_beat_text():
    index = ProvenanceIndex(text_of=lambda v: v.content if isinstance(v, Message) else None)
    first = Message("The answer is 4", id="m1")
    index.register(first, "model", keys=[("message", "m1")])
    index.register(Message("The answer is 4", id="m1"), "relay", keys=[("message", "m1")])  # carried along
    index.register("The answer is 4", "other")  # newer producer of the same text
    copy = Message("The answer is 4", id="m1")  # a copy the framework made: not the same object
    assert index.find(copy, keys=[("message", copy.id)]) == Match("model", KEY)
    assert index.find(copy) == Match("other", VALUE)  # without its key, only the text is left
    index.register_key(("tool_call", "c1"), "model")
    index.register_key(("tool_call", "c1"), "later")
    assert index.node_of(None, keys=[("tool_call", "c1")]) == "model"
    assert index.find(first, keys=[("message", "m1")]) == Match("model", IDENTITY)
    relayed = Message("relayed", id="m1")
    index.register(relayed, "relay")
    assert index.find(relayed, keys=[("message", "m1")]) == Match("relay", IDENTITY)  # identity beats keys


def test_exact_text_most_recent_producer_wins_and_text_of_gives_object_texts():
    index = ProvenanceIndex(text_of=lambda v: v.content if isinstance(v, Message) else None)
    index.register("Draft: hello", "a")
    index.register(Message("Draft: hello"), "b")
    assert index.find("Draft: hello") == Match("b", VALUE)
    assert index.find(Message("Draft: hello")) == Match("b", VALUE)
    assert index.find(Message("Draft"), text="Draft: hello") == Match("b", VALUE)  # explicit text wins


def test_exact_text_beats_containment():
    index = ProvenanceIndex()
    index.register("Paris is the capital", "whole")
    index.register("Paris", "part")
    assert index.find("Paris is the capital") == Match("whole", VALUE)


def test_containment_longest_first_and_explained_matches_dropped():
    index = ProvenanceIndex()
    index.register("Paris", "city")  # inside the answer below: explained by it
    index.register("The capital is Paris.", "answer")
    index.register("Reason: history", "reason")
    consumed = "Question: capital?\nThe capital is Paris.\nReason: history and size"
    assert index.find_all(consumed) == [Match("answer", CONTAINS), Match("reason", CONTAINS)]
    assert index.find(consumed) == Match("answer", CONTAINS)
    assert index.find_all("Paris, again") == [Match("city", CONTAINS)]


def test_containment_equal_length_more_recent_first_and_limit():
    index = ProvenanceIndex()
    for i in range(8):
        index.register(f"part{i}", f"n{i}")
    consumed = " ".join(f"part{i}" for i in range(8))
    found = index.find_all(consumed)
    assert [m.node for m in found] == ["n7", "n6", "n5", "n4", "n3"]  # MAX_CONTAINED, newest first
    assert [m.node for m in index.find_all(consumed, limit=2)] == ["n7", "n6"]


def test_containment_scans_a_bounded_window(monkeypatch):
    monkeypatch.setattr(provenance, "CONTAIN_SCAN", 3)
    index = ProvenanceIndex()
    index.register("old text", "old")
    for i in range(3):
        index.register(f"newer {i}", f"n{i}")
    assert index.find("... old text ...") is None  # beyond the window
    index.register("old text", "old again")  # registering again makes it recent
    assert index.find("... old text ...") == Match("old again", CONTAINS)


def test_containers_register_their_items_and_are_traced_through_them():
    index = ProvenanceIndex()
    sources = ["doc one", "doc two"]
    index.register({"answer": "Forty-two", "sources": sources}, "a")
    assert index.node_of("Forty-two") == "a"
    assert index.node_of(sources) == "a"  # the list object itself, by identity
    assert index.node_of("doc one") is None  # items of items are not registered (depth 1)
    index.register("Some result", "b")
    found = index.find_all({"x": "Forty-two", "y": "Some result", "z": 3})
    assert found == [Match("a", VALUE), Match("b", VALUE)]
    assert index.find_all(("Forty-two", "Forty-two")) == [Match("a", VALUE)]  # one edge per producer
    index.register({"deep": {"inner": "nested value"}}, "c", depth=0)
    assert index.find("nested value") is None


def test_concurrent_registration_and_lookup_are_safe():
    index = ProvenanceIndex()
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            for i in range(400):
                value = index.tag(f"text {worker}-{i}", f"{worker}-{i}")
                assert index.node_of(value) == f"{worker}-{i}"
                index.find_all(f"prefix text {worker}-{i} suffix")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert index.node_of("text 3-399") == "3-399"


@pytest.mark.parametrize("value", [object(), 3, "unknown text", b"bytes!"])
def test_unknown_values_have_no_producer(value):
    assert ProvenanceIndex().find_all(value) == []


def test_without_text_rules_only_identity_tags_and_keys_answer():
    index = ProvenanceIndex(text=False)
    tagged = index.tag("a long produced text", "a")
    obj = {"k": "v"}
    index.register(obj, "b")
    index.register("another produced text", "c")  # a text: nothing to follow without the text rules
    index.register_key(("message", "m1"), "d")
    assert index.node_of(tagged) == "a" and index.node_of(obj) == "b"
    assert index.node_of("a long produced text") is None  # equal text, not the tagged value
    assert index.node_of("another produced text") is None
    assert index.node_of("prefix: a long produced text") is None  # no containment either
    assert index.node_of(None, keys=[("message", "m1")]) == "d"


def test_depth_zero_follows_the_container_alone():
    index = ProvenanceIndex()
    item = ["inner"]
    produced = [item]
    index.tag(produced, "a", depth=0)
    assert index.node_of(produced) == "a"
    assert index.node_of(item) is None  # its items were not registered
    index.register(item, "b")
    assert index.node_of([item]) == "b"  # an unknown container is traced through its items...
    assert index.node_of([item], depth=0) is None  # ...unless asked not to


def test_latest_keys_name_slots_that_later_producers_take_over():
    index = ProvenanceIndex()
    index.register_key(("text", "alice", "hi"), "first", latest=True)
    index.register_key(("text", "alice", "hi"), "second", latest=True)
    index.register_key(("message", "m1"), "minted")
    index.register_key(("message", "m1"), "relay")  # a minted id: the first stays
    assert index.node_of(None, keys=[("text", "alice", "hi")]) == "second"
    assert index.node_of(None, keys=[("message", "m1")]) == "minted"
    assert index.has_key(("message", "m1")) and not index.has_key(("message", "m2"))
    assert index.by_key(("message", "m1")) == "minted" and index.by_key(("message", "m2")) is None
    # keys are tried in the order given: the first key that answers wins
    assert index.node_of(None, keys=[("message", "m2"), ("text", "alice", "hi"), ("message", "m1")]) == "second"


# ----- templates, typed values and partial matches ---------------------------------------------------------
SYSTEM = "You are the support agent of {company}. Today is {today}."


def test_a_template_matches_the_text_it_produced_and_the_edge_says_so():
    index = ProvenanceIndex()
    assert index.register_template(SYSTEM, "param:system").placeholders == ("company", "today")
    consumed = SYSTEM.format(company="Acme", today="Monday")
    found = index.find(consumed)
    assert (found.node, found.how) == ("param:system", TEMPLATE)
    assert found.detail.values == {"company": "Acme", "today": "Monday"}
    assert found.edge("system") == Edge("param:system", "system", "data", "template")
    assert index.find(SYSTEM) == Match("param:system", VALUE)  # the template's own text, exactly
    assert index.find("You are a support agent. Today is Monday.") is None


def test_the_edge_kind_survives_the_graph_json_round_trip():
    graph = Graph()
    system = graph.add("parameter", "system", SYSTEM)
    call = graph.add("op", "llm", "hi", parents=[Match(system.id, TEMPLATE).edge("messages[0]")])
    assert Graph.from_json(graph.to_json()) == graph
    assert graph.to_dict()["nodes"][1]["parents"] == [{"id": system.id, "arg": "messages[0]", "match": "template"}]
    assert call.edges[0].match == "template"


def test_a_template_match_keeps_the_producers_of_the_values_it_bound():
    index = ProvenanceIndex()
    index.register("Acme Corporation", "lookup")  # an earlier step produced the company name
    index.register_template(SYSTEM, "param:system")
    found = index.find_all(SYSTEM.format(company="Acme Corporation", today="Monday"))
    assert [(m.node, m.how) for m in found] == [("param:system", TEMPLATE), ("lookup", VALUE)]


def test_exact_text_beats_a_template_and_the_most_specific_template_wins():
    index = ProvenanceIndex()
    index.register_template("Hello {name}", "short")
    index.register_template("Hello {name}, welcome to {place}!", "long")
    index.register_template("Hello {who}, welcome to {where}!", "same length, newer")
    assert index.find("Hello Ann, welcome to Oslo!").node == "same length, newer"
    assert index.find("Hello Ann").node == "short"
    index.register("Hello Ann", "exact")
    assert index.find("Hello Ann") == Match("exact", VALUE)


def test_a_template_with_too_little_constant_text_is_no_evidence():
    index = ProvenanceIndex()
    assert index.register_template("{x}: {y}", "vague") is None  # ": " matches almost anything
    assert index.find("a: b and more") is None
    assert index.node_of("{x}: {y}") == "vague"  # still known by its own text


def test_a_template_output_inside_a_longer_prompt_is_contained():
    index = ProvenanceIndex()
    index.register_template(SYSTEM, "param:system")
    index.register("The refund was approved.", "earlier")
    prompt = "SYSTEM: " + SYSTEM.format(company="Acme", today="Monday") + "\nUSER: The refund was approved."
    found = index.find_all(prompt)
    assert [(m.node, m.how) for m in found] == [("param:system", CONTAINS), ("earlier", CONTAINS)]
    assert found[0].detail.values == {"company": "Acme", "today": "Monday"}


def test_partial_matches_link_long_lines_of_an_edited_text_most_characters_first():
    instructions = (
        "You are a meticulous support agent for an online shop.\n"
        "Always check the order number before answering anything.\n"
        "Be brief."
    )
    index = ProvenanceIndex()
    index.register(instructions, "param:instructions", partial=True)
    edited = instructions.replace("Be brief.", "Answer in French.") + "\nOrder: 123"
    found = index.find(edited)
    assert (found.node, found.how) == ("param:instructions", PARTIAL)
    assert found.detail == (
        "Always check the order number before answering anything.",
        "You are a meticulous support agent for an online shop.",
    )
    index.register("Always check the order number before answering anything.", "quoted")
    assert index.find(edited) == Match("quoted", CONTAINS)  # a whole produced text inside beats fragments
    plain = ProvenanceIndex()
    plain.register(instructions, "p")  # without partial=True, an edited text is not linked
    assert plain.find(edited) is None


def test_partial_ties_most_characters_then_most_recent():
    index = ProvenanceIndex()
    line = "Cite the policy section that applies to the request."
    index.register(line + "\nShort.", "older", partial=True)
    index.register(line + "\nAnother short one.", "newer", partial=True)
    index.register(line + "\nNever promise a refund before the manager approves it.\nEnd.", "most", partial=True)
    consumed = "X\n" + line + "\nNever promise a refund before the manager approves it.\nY"
    assert [m.node for m in index.find_all(consumed)] == ["most", "newer", "older"]


def test_typed_numbers_link_by_their_renderings_only_when_registered_typed():
    index = ProvenanceIndex()
    index.register(3.75, "solve", typed=True)
    index.register(2.5, "untyped")  # not typed: numbers are never matched
    assert index.find("3.75") == Match("solve", TYPED)  # str(a) handed on
    assert index.find(3.75) == Match("solve", TYPED)  # the float itself, in a Prediction
    assert index.find("the answer is 3.75.").how == TYPED  # a whole token of 4 characters
    assert index.find("the answer is 13.75") is None and index.find("x = -3.75!") is None
    assert index.find("2.5") is None and index.find(2.5) is None
    index.register(3, "count", typed=True)
    assert index.find("3") == Match("count", TYPED) and index.find(" 3 ") == Match("count", TYPED)
    assert index.find("step 3 of 3") is None  # too short to be evidence inside a longer text


def test_typed_bool_and_none_link_only_as_the_whole_value():
    index = ProvenanceIndex()
    index.register(True, "check", typed=True)
    index.register(None, "nothing", typed=True)
    assert index.find("True") == Match("check", TYPED) and index.find("true") == Match("check", TYPED)
    assert index.find(True) == Match("check", TYPED)
    assert index.find("It is True that...") is None
    assert index.find("null") == Match("nothing", TYPED)
    assert index.find(None) is None  # a None value is no evidence of anything


def test_typed_containers_models_and_dataclasses_link_by_str_repr_and_json():
    import dataclasses as dc

    from pydantic import BaseModel

    class Answer(BaseModel):
        city: str
        score: float

    @dc.dataclass
    class Pair:
        left: str
        right: int

    index = ProvenanceIndex()
    index.register(["Zürich", "Genève"], "cities", typed=True)
    index.register(Answer(city="Oslo", score=0.9), "model", typed=True)
    index.register(Pair("abc", 12), "pair", typed=True)
    index.register({"k": 1, "v": [1, 2]}, "mapping", typed=True)
    import json

    assert index.find(str(["Zürich", "Genève"])).node == "cities"
    assert index.find(json.dumps(["Zürich", "Genève"])).node == "cities"  # ensure_ascii on: \\u00fc
    assert index.find(json.dumps(["Zürich", "Genève"], ensure_ascii=False)).node == "cities"
    assert index.find('Pick one of ["Zürich","Genève"] please').how == TYPED  # compact JSON, contained
    assert index.find(Answer(city="Oslo", score=0.9).model_dump_json()).node == "model"
    assert index.find("Context: " + repr(Answer(city="Oslo", score=0.9))).node == "model"
    assert index.find(json.dumps({"left": "abc", "right": 12}, indent=2)).node == "pair"
    assert index.find({"k": 1, "v": [1, 2]}).node == "mapping"  # rebuilt elsewhere: found by its JSON


def test_an_adapters_rendering_of_a_field_links_too():
    def numbered(value):  # e.g. how a framework formats a list field in a prompt
        return ["\n".join(f"[{i}] {item}" for i, item in enumerate(value, 1))] if isinstance(value, list) else None

    index = ProvenanceIndex(renderers=[numbered])
    index.register(["alpha", "beta"], "lister", typed=True)
    assert index.find("[1] alpha\n[2] beta").node == "lister"
    index.register(7, "seven", renderings=["seven days"])
    assert index.find("in seven days") == Match("seven", TYPED)


def test_register_parameter_picks_the_rules_of_its_kind():
    from opto_core.kernel.parameters import Parameter

    index = ProvenanceIndex()
    index.register_parameter(Parameter("system", "text", SYSTEM, template=True), "param:system")
    index.register_parameter(Parameter("k", "int", 12, lower=1, upper=50), "param:k")
    index.register_parameter(
        Parameter("rules", "text", "Always answer with the order number first, then the status.\nSign as Bob."),
        "param:rules",
    )
    assert index.find(SYSTEM.format(company="A", today="B")).how == TEMPLATE
    assert index.find("12") == Match("param:k", TYPED)
    assert index.find("Always answer with the order number first, then the status.\nSign as Alice.").how == PARTIAL


def test_a_template_parameter_is_known_by_the_outputs_of_its_current_value():
    """After an optimizer step the program renders the new template: its outputs must still be credited."""
    from opto_core.kernel.parameters import Parameter

    parameter = Parameter("system", "text", SYSTEM, template=True)
    parameter.value = parameter.validate("Answer for {company} only; the date is {today}. Keep it short.")
    index = ProvenanceIndex()
    index.register_parameter(parameter, "param:system")
    found = index.find("Answer for Acme only; the date is Monday. Keep it short.")
    assert found is not None and found.node == "param:system" and found.how == TEMPLATE
    assert found.detail.values == {"company": "Acme", "today": "Monday"}


def test_without_text_rules_templates_typed_and_partial_are_off():
    index = ProvenanceIndex(text=False)
    index.register_template(SYSTEM, "t")
    index.register(3.75, "n", typed=True)
    index.register("A long line that would be a fragment for partial matching.", "p", partial=True)
    assert index.find(SYSTEM.format(company="A", today="B")) is None
    assert index.find("3.75") is None and index.find(3.75) is None
    assert index.find("A long line that would be a fragment for partial matching. Edited.") is None


_FIELD = st.from_regex(r"[a-z][a-z_]{0,5}", fullmatch=True)


@settings(max_examples=200, deadline=None)
@given(
    names=st.lists(_FIELD, min_size=1, max_size=4, unique=True),
    pieces=st.lists(st.text(alphabet="abc .,:\n{}", min_size=0, max_size=8), min_size=5, max_size=5),
    values=st.lists(st.text(alphabet="abcxyz .,:{}", max_size=8), min_size=4, max_size=4),
)
def test_property_a_registered_templates_every_output_is_credited_to_it(names, pieces, values):
    head = "Instructions for the agent: "  # enough constant text to be evidence
    source = (
        head
        + "".join(p.replace("{", "{{").replace("}", "}}") + "{" + n + "}" for p, n in zip(pieces, names))
        + pieces[-1].replace("{", "{{").replace("}", "}}")
    )
    index = ProvenanceIndex()
    template = index.register_template(source, "param:t")
    produced = source.format(**dict(zip(names, values)))
    found = index.find(produced)
    assert found is not None and found.node == "param:t"
    if produced != source:  # (the template's own text is found exactly)
        assert found.how == TEMPLATE and template.render(found.detail.values) == produced
