"""The shared write-back model: stable parameters, one include/exclude rule, ordered writes with rollback."""

import pytest

from opto_core.kernel.binding import (
    AttributeBinding,
    Binding,
    BoundParameters,
    FrozenParameter,
    UnknownParameters,
    WriteError,
    select,
)
from opto_core.kernel.parameters import InvalidValue, Parameter


class Holder:
    def __init__(self):
        self.a, self.b, self.c = "alpha", 0.5, 3


class Exploding(AttributeBinding):
    """Refuses one value, as a framework refusing a write validation could not foresee."""

    def write(self, value):
        if value == 99:
            raise RuntimeError("the framework refused 99")
        super().write(value)


def bound_holder():
    h = Holder()
    bound = BoundParameters(
        [
            (Parameter("a", "text", h.a), AttributeBinding(h, "a")),
            (Parameter("b", "float", h.b, lower=0, upper=1), AttributeBinding(h, "b")),
            (Parameter("c", "int", h.c, lower=0, upper=100), Exploding(h, "c")),
        ]
    )
    return h, bound


def test_parameters_are_the_same_objects_and_read_live_values():
    h, bound = bound_holder()
    first = bound.parameters()
    h.a = "edited by the user"
    second = bound.parameters()
    assert [id(p) for p in first] == [id(p) for p in second]
    assert second[0].value == "edited by the user"


def test_a_failing_third_write_restores_the_first_two_and_names_the_binding():
    h, bound = bound_holder()
    with pytest.raises(WriteError) as info:
        bound.apply({"a": "new", "b": 0.9, "c": 99})
    assert "'c'" in str(info.value) and "Holder.c" in str(info.value) and "refused 99" in str(info.value)
    assert (h.a, h.b, h.c) == ("alpha", 0.5, 3)
    assert [p.value for p in bound.parameters()] == ["alpha", 0.5, 3]


def test_invalid_or_unknown_values_write_nothing():
    h, bound = bound_holder()
    with pytest.raises(InvalidValue):
        bound.apply({"a": "new", "b": 7.0})
    with pytest.raises(UnknownParameters) as info:
        bound.apply({"a": "new", "nope": 1})
    assert "['nope']" in str(info.value) and "'a', 'b', 'c'" in str(info.value)
    assert h.a == "alpha"


def test_snapshot_and_restore_undo_every_write():
    h, bound = bound_holder()
    snap = bound.snapshot()
    assert bound.apply({"a": "x", "b": "0.25", "c": 7}) == {"a": "x", "b": 0.25, "c": 7}
    assert (h.a, h.b, h.c) == ("x", 0.25, 7)
    bound.restore(snap)
    assert (h.a, h.b, h.c) == ("alpha", 0.5, 3)


def test_one_include_exclude_rule_freezes_and_keeps_visible():
    bound = BoundParameters(
        [
            (Parameter("prompt.system", "text", "s"), None),
            (Parameter("prompt.human", "text", "h"), None),
            (Parameter("llm.temperature", "float", 0.1, lower=0, upper=2), None),
        ],
        include=["prompt.*"],
        exclude=["prompt.human"],
    )
    assert [(p.name, p.trainable) for p in bound] == [
        ("prompt.system", True),
        ("prompt.human", False),
        ("llm.temperature", False),
    ]
    with pytest.raises(FrozenParameter):
        bound.apply({"llm.temperature": 0.5})
    assert bound.apply({"llm.temperature": 0.5}, allow_frozen=True) == {"llm.temperature": 0.5}


def test_an_unknown_pattern_lists_the_real_names():
    with pytest.raises(UnknownParameters) as info:
        select(["a.x", "b.y"], include=["c.*"])
    assert "['c.*']" in str(info.value) and "['a.x', 'b.y']" in str(info.value)


def test_invalid_reports_values_written_around_the_model():
    h, bound = bound_holder()
    h.b = 99.0  # e.g. LLM-written code that set another parameter past its bounds
    assert list(bound.invalid()) == ["b"]


def test_a_binding_with_its_own_raw_state_is_undone_exactly():
    log = []

    class Cached(Binding):
        def __init__(self):
            self.value, self.cache = "v0", "cache-of-v0"

        def read(self):
            return self.value

        def write(self, value):
            self.value = value

        def refresh(self):
            self.cache = f"cache-of-{self.value}"
            log.append(self.cache)

        def save(self):
            return self.value, self.cache

        def load(self, state):
            self.value, self.cache = state

    binding = Cached()
    bound = BoundParameters([(Parameter("p", "text", "v0"), binding)])
    snap = bound.snapshot()
    bound.apply({"p": "v1"})
    assert binding.cache == "cache-of-v1"
    bound.restore(snap)
    assert (binding.value, binding.cache) == ("v0", "cache-of-v0")
