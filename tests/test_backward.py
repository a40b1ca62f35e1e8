"""Backward: the minimal subgraph between trainable parameters and outputs with feedback."""

import pytest

from opto_core import Edge, Feedback, Graph, Parameter, backward
from opto_core.kernel.backward import BackwardError


def param(g, name, value=1.0, trainable=True):
    return g.add_parameter(Parameter(name, "float", value, trainable=trainable))


def names(nodes):
    return [n.name for n in nodes]


def test_chain_keeps_every_op_in_order():
    g = Graph()
    x = g.add("input", "x", 1.0)
    node = param(g, "w")
    for i in range(5):
        node = g.add("op", f"step{i}", float(i), parents=[Edge(node.id, "a"), Edge(x.id, "b")])
    g.mark_output(node.id)
    inst = backward(g, Feedback(0.0, "too small"))
    assert names(inst.code) == [f"step{i}" for i in range(5)]
    assert names(inst.variables) == ["w"] and names(inst.inputs) == ["x"]
    assert names(inst.outputs) == ["step4"] and names(inst.others) == [f"step{i}" for i in range(4)]
    assert inst.feedback_text() == "score: 0 | too small"


def test_diamond_and_fan_in():
    g = Graph()
    params = [param(g, f"p{i}") for i in range(4)]
    left = g.add("op", "left", 1, parents=[params[0].id])
    right = g.add("op", "right", 2, parents=[params[0].id, params[1].id])
    total = g.add("op", "sum", 3, parents=[left.id, right.id, params[2].id, params[3].id])
    g.mark_output(total.id)
    inst = backward(g, 1.0)
    assert names(inst.variables) == ["p0", "p1", "p2", "p3"]
    assert names(inst.code) == ["left", "right", "sum"]


def test_parameters_off_every_path_are_left_out():
    g = Graph()
    used = param(g, "used")
    unused = param(g, "unused")  # feeds an op that is not an output's ancestor
    frozen = param(g, "frozen", trainable=False)
    side = g.add("op", "side", 0, parents=[unused.id])
    main = g.add("op", "main", 1, parents=[used.id, frozen.id])
    after = g.add("op", "after_output", 2, parents=[main.id, unused.id])  # downstream of the output only
    g.mark_output(main.id)
    inst = backward(g, "wrong")
    assert names(inst.variables) == ["used"]
    assert names(inst.code) == ["main"]
    assert names(inst.inputs) == ["frozen"]  # frozen parameters are inputs, never variables
    assert side not in inst.code and after not in inst.code


def test_multiple_outputs_with_their_own_feedback():
    g = Graph()
    a, b = param(g, "a"), param(g, "b")
    oa = g.add("op", "out_a", 1, parents=[a.id])
    ob = g.add("op", "out_b", 2, parents=[b.id])
    g.mark_output(oa.id, "answer")
    g.mark_output(ob.id, "summary")
    both = backward(g, {"answer": Feedback(0.0, "wrong"), ob.id: "good"})
    assert names(both.variables) == ["a", "b"] and len(both.feedback) == 2
    only_a = backward(g, {"answer": "wrong"})
    assert names(only_a.variables) == ["a"] and names(only_a.code) == ["out_a"]


def test_exception_node_carries_feedback():
    g = Graph()
    code = g.add_parameter(Parameter("tool.code", "code", "def tool(x):\n    return 1 / x\n"))
    x = g.add("input", "x", 0)
    err = g.add_exception(
        "tool", ZeroDivisionError("division by zero"), parents=[Edge(code.id, "__code"), Edge(x.id, "x")]
    )
    inst = backward(g, "The tool crashed")
    assert inst.exceptions == [err] and inst.outputs == [err]
    assert inst.exceptions[0].value == "ZeroDivisionError: division by zero"


def test_context_edges_can_be_ignored_to_credit_producers():
    g = Graph()
    sys_a = g.add_parameter(Parameter("writer.system", "text", "write"))
    sys_b = g.add_parameter(Parameter("critic.system", "text", "critique"))
    draft = g.add("op", "writer", "draft", parents=[Edge(sys_a.id, "system")])
    review = g.add("op", "critic", "ok", parents=[Edge(sys_b.id, "system"), Edge(draft.id, "context", "context")])
    g.mark_output(review.id)
    assert names(backward(g, "bad").variables) == ["writer.system", "critic.system"]
    producers = backward(g, "bad", follow=("data",))
    assert names(producers.variables) == ["critic.system"]


def test_errors_are_clear():
    g = Graph()
    frozen = param(g, "frozen", trainable=False)
    out = g.add("op", "out", 1, parents=[frozen.id])
    with pytest.raises(BackwardError, match="no output node"):
        backward(g, "x")
    g.mark_output(out.id)
    with pytest.raises(BackwardError, match="no trainable parameter.*frozen parameters there: \\['frozen'\\]"):
        backward(g, "x")
    with pytest.raises(BackwardError, match="not an output"):
        backward(g, {"param:frozen": "x"})
    with pytest.raises(BackwardError, match="no node id and no output name"):
        backward(g, {"ghost": "x"})


def test_long_chain_is_iterative():
    g = Graph()
    node = param(g, "w")
    for i in range(30_000):  # far beyond the recursion limit
        node = g.add("op", "add", i, parents=[node.id])
    g.mark_output(node.id)
    inst = backward(g, 0.0)
    assert len(inst.code) == 30_000 and len(set(inst.names.values())) == len(inst.names)
