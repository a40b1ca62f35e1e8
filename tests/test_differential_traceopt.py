"""Differential test, micrograd style: one small program traced by `opto_core.kernel.trace` and by trace-opt
(Trace's own implementation, the `bench` extra) gives the same parameters, ops and edges on the path to
the output. trace-opt runs in a subprocess: its global node registry must not leak into this process."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from opto_core import Parameter
from opto_core.kernel.trace import capture, op


@op(trainable=True, parameter_name="parse.code")
def parse(line):
    """Read the amount."""
    return float(line.split("$")[1])


@op
def scale(a, k):
    """Scale."""
    return a * k


@op
def combine(b, c):
    """Add."""
    return b + c


TRACE_OPT_PROGRAM = textwrap.dedent('''
    import json, os, re
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    from opto.trace import bundle, node

    k = node(2.0, name="k", trainable=True)

    @bundle(trainable=True)
    def parse(line):
        """Read the amount."""
        return float(line.split("$")[1])

    @bundle()
    def scale(a, k):
        """Scale."""
        return a * k

    @bundle()
    def combine(b, c):
        """Add."""
        return b + c

    out = combine(scale(parse(node("total $3.5", name="line")), k), 1.0)

    def label(n):
        base = n.name.split(":")[0]
        if type(n).__name__ == "ParameterNode":
            if base == "__code":  # a trainable bundle's source: name it after its function
                return "parameter:" + re.search(r"def (\\w+)", n.data).group(1) + ".code"
            return "parameter:" + base
        if type(n).__name__ == "MessageNode":
            if base == "eval":  # a trainable bundle's call is an `eval` of its code parameter
                code = next(p for p in n.parents if p.name.startswith("__code"))
                return "op:" + re.search(r"def (\\w+)", code.data).group(1)
            return "op:" + base
        return "input:" + base

    edges, seen, stack = set(), set(), [out]
    while stack:
        n = stack.pop()
        if n.name in seen:
            continue
        seen.add(n.name)
        for p in n.parents:
            edges.add((label(p), label(n)))
            stack.append(p)
    print(json.dumps({"nodes": sorted({label(out)} | {e[0] for e in edges}),
                      "edges": sorted(edges), "value": out.data}))
''')


def ours() -> dict:
    k = Parameter("k", "float", 2.0)
    with capture() as run:
        out = combine(scale(parse(run.input("line", "total $3.5")), k), 1.0)
        output_id = run.mark_output(out)
    graph = run.graph
    label = {n.id: f"{n.kind}:{n.name}" for n in graph.nodes}
    edges, stack, seen = set(), [graph[output_id].edges[0].id], set()
    while stack:
        node_id = stack.pop()
        if node_id in seen:
            continue
        seen.add(node_id)
        for edge in graph[node_id].edges:
            edges.add((label[edge.id], label[node_id]))
            stack.append(edge.id)
    root = label[graph[output_id].edges[0].id]
    return {"nodes": sorted({root} | {e[0] for e in edges}), "edges": sorted(edges), "value": float(out)}


def test_same_parameters_ops_and_edges_as_trace_opt(tmp_path):
    program = tmp_path / "traceopt_program.py"  # trace-opt reads each bundle's source from its file
    program.write_text(TRACE_OPT_PROGRAM)
    done = subprocess.run([sys.executable, str(program)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    theirs = json.loads(done.stdout.strip().splitlines()[-1])
    mine = ours()
    assert mine["value"] == theirs["value"] == 8.0
    assert mine["nodes"] == theirs["nodes"]
    assert [tuple(e) for e in theirs["edges"]] == [tuple(e) for e in mine["edges"]]
    parameters_and_ops = [n for n in mine["nodes"] if not n.startswith("input:")]
    assert parameters_and_ops == ["op:combine", "op:parse", "op:scale", "parameter:k", "parameter:parse.code"]
