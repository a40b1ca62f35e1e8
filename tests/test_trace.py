"""Plain-Python tracing: graphs of real runs, exceptions, trainable code, isolation, and
micrograd-style differential tests (traced and untraced runs give the same result)."""

import asyncio
import threading

import pytest

from opto_core import Parameter
from opto_core.engine.target import FunctionTarget
from opto_core.kernel.trace import capture, current_run, op, untag


@op
def add(x, y):
    """Add two numbers."""
    return x + y


@op
def join(*parts, sep=" "):
    return sep.join(parts)


@op(trainable=True)
def clean(text):
    """Normalise whitespace."""
    return " ".join(text.split())


@op
def divide(x, y):
    return x / y


def workflow(a, b, k):
    s = add(a, b)
    t = add(s, k)
    return add(t, s)


def test_differential_same_result_traced_and_untraced():
    k = Parameter("k", "float", 0.5)
    plain = workflow(1.5, 2.0, k)
    with capture() as run:
        traced = workflow(run.input("a", 1.5), run.input("b", 2.0), k)
    assert traced == plain == 7.5
    assert type(untag(traced)) is float and repr(traced) == repr(plain)
    assert clean("  a   b ") == "a b"
    with capture():
        assert clean("  a   b ") == "a b" and join("x", "y", sep="-") == "x-y"


def test_graph_of_a_diamond_has_real_data_flow():
    k = Parameter("k", "float", 0.5)
    with capture() as run:
        out = workflow(run.input("a", 1.0), run.input("b", 2.0), k)
        run.mark_output(out)
    g = run.graph
    ops = g.of_kind("op")
    assert [n.name for n in ops] == ["add", "add", "add"]
    s, t, u = ops
    assert s.parents == ["a#0", "b#0"]
    assert t.parents == [s.id, "param:k"] and [e.arg for e in t.edges] == ["x", "y"]
    assert u.parents == [t.id, s.id]  # s feeds both t and u: a diamond
    assert g.outputs[0].parents == [u.id]
    assert "Add two numbers" in s.doc


def test_var_positional_and_keyword_arguments_are_edges():
    with capture() as run:
        out = join(run.input("p", "a"), run.input("q", "b"), sep="+")
    node = run.graph.of_kind("op")[0]
    assert [e.arg for e in node.edges] == ["parts[0]", "parts[1]", "sep"] and out == "a+b"


def test_exception_becomes_a_node_and_the_graph_survives():
    with pytest.raises(ZeroDivisionError):
        with capture() as run:
            divide(add(run.input("x", 1.0), 1.0), 0.0)
    exc = run.graph.of_kind("exception")
    assert len(exc) == 1 and exc[0].value.startswith("ZeroDivisionError")
    assert run.graph.outputs[0].parents == [exc[0].id]
    assert isinstance(run.error, ZeroDivisionError)


def test_trainable_code_is_a_parameter_and_new_source_runs():
    assert clean.code is not None and clean.code.kind == "code"
    assert clean.code.value.startswith("def clean(text):")
    with capture() as run:
        clean("a  b")
    node = run.graph.of_kind("op")[0]
    assert "param:clean.code" in node.parents
    old = clean.code.value
    try:
        clean.code.value = clean.code.validate('def clean(text):\n    return text.upper()\n')
        assert clean("a b") == "A B"
    finally:
        clean.code.value = old
    assert clean("a  b") == "a b"


def test_runs_in_threads_and_tasks_do_not_mix():
    results = {}

    def worker(i):
        with capture() as run:
            value = run.input("x", float(i))
            for _ in range(50):
                value = add(value, 1.0)
            run.mark_output(value)
        results[i] = run.graph

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, g in results.items():
        assert len(g.of_kind("op")) == 50 and len(g.of_kind("input")) == 51  # x, and each constant 1.0
        assert g.outputs[0].value == i + 50.0

    async def task(i):
        with capture() as run:
            v = add(run.input("x", float(i)), 1.0)
            await asyncio.sleep(0)
            v = add(v, 1.0)
        return run.graph

    async def main():
        return await asyncio.gather(*(task(i) for i in range(5)))

    graphs = asyncio.run(main())
    assert all(len(g.of_kind("op")) == 2 for g in graphs)
    assert current_run() is None


def test_function_target_protocol():
    k = Parameter("k", "float", 1.0)
    target = FunctionTarget(lambda x: add(x, k), [k, clean])
    assert [p.name for p in target.parameters()] == ["k", "clean.code"]
    out, g = target.run({"x": 2.0})
    assert out == 3.0 and g.outputs and g.outputs[0].value == 3.0
    snap = target.snapshot()
    target.apply({"k": 5.0})
    assert target.run({"x": 2.0})[0] == 7.0
    target.restore(snap)
    assert target.run({"x": 2.0})[0] == 3.0
    with pytest.raises(KeyError, match="unknown parameters"):
        target.apply({"nope": 1})
    failing = FunctionTarget(lambda x: divide(x, 0.0), [k])
    out, g = failing.run({"x": 1.0})
    assert isinstance(out, ZeroDivisionError) and g.of_kind("exception")
