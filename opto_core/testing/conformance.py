"""The conformance suite every adapter passes: one set of checks, run on each adapter's own small program.

In the spirit of langchain-core's standard tests: an adapter (ours, or one you write) describes a
small real program of its framework in an `AdapterCase`, and every check below runs on it against
a scripted OpenAI-compatible server on 127.0.0.1 (`ScriptedServer`: only the model is fake; the
framework's own client sends real HTTP requests, recorded byte for byte). The checks:

- ``discovery_is_stable``: the same `Parameter` objects on every read; a second discovery gives
  the same names and values;
- ``a_half_failed_write_rolls_back``: when the last write of an ``apply`` fails, every earlier
  write is undone: the values, and the next model request, byte for byte;
- ``snapshot_restore_gives_identical_requests``: a write changes the next request; ``restore``
  of an earlier snapshot gives requests byte-identical to the ones before it;
- ``include_exclude``: ``include`` keeps only what it names trainable, ``exclude`` freezes what it
  names (still listed), a pattern that names nothing is an error listing the real names;
- ``graphs_carry_the_shared_meta``: every graph has the kit's meta keys, this framework's name
  and a marked output;
- ``graph_json_round_trip``: ``Graph.from_json(graph.to_json()) == graph``;
- ``tracing_keeps_the_output``: the traced run gives the native run's output and sends the very
  same model requests;
- ``values_deploy_in_a_fresh_process``: ``save_values`` after a write, then the adapter's
  ``apply_values`` in a new Python process into a freshly built program gives the same values;
- ``every_parameter_is_reached``: feedback on the program's output reaches every trainable
  parameter (the coverage check, ``opto_core.coverage``, which the case hands in as ``coverage``:
  test doubles sit below the engine), except those the case names in ``unreached`` with the reason
  they are legitimately unreached in its small program; a name listed there must really be unreached.

Run them with pytest (``tests/conformance/test_conformance.py`` is the example)::

    @pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
    def test_my_adapter(check):
        check(MY_CASE)

Imports nothing but the kernel and the standard library (test doubles sit below the engine).
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from opto_core.kernel.binding import Binding, BoundParameters, UnknownParameters, WriteError
from opto_core.kernel.graph import META_KEYS, Graph
from opto_core.testing.scripted_server import ScriptedServer


def echo_reply(request: dict[str, Any]) -> str:
    """A deterministic answer: the first words of the request's last message (same request, same answer)."""
    messages = request.get("messages") or [{}]
    text = str(messages[-1].get("content") or "")
    return "ok: " + " ".join(text.split()[:6])


@dataclass
class AdapterCase:
    """One adapter's small real program, and how to reach the adapter's standard pieces for it.

    ``make(base_url)`` builds a fresh program whose model is the scripted server at ``base_url``;
    ``target(program)`` gives the adapter's target (``parameters``, ``apply``, ``snapshot``,
    ``restore``, ``run``, ``save_values``); ``bound_parameters(program, include=, exclude=)`` and
    ``apply_values(program, values_or_path)`` are the adapter's public functions; ``run_native``
    runs the program the framework's own way, untraced, and returns its output. ``updates`` are
    valid new values for at least two trainable parameters, each visible in the next model request.
    ``output_of`` makes a target's and a native run's outputs comparable (default: ``str``).
    ``factory``, ``bound_path`` and ``apply_path`` (``"module:function"``) are what a fresh
    process imports to build the program and deploy values into it (the module must be importable
    there: its directory is put on ``sys.path``, given by ``path``). ``coverage`` is
    ``opto_core.coverage`` (or any function ``(target, examples) -> Coverage``); ``unreached``
    names the parameters its program legitimately leaves unreached, each with the reason.
    """

    name: str
    framework: str
    make: Callable[[str], Any]
    target: Callable[[Any], Any]
    bound_parameters: Callable[..., BoundParameters]
    apply_values: Callable[[Any, Any], Any]
    run_native: Callable[[Any, Any], Any]
    example: Any
    updates: Mapping[str, Any]
    factory: str
    bound_path: str
    apply_path: str
    path: str = ""
    reply: Callable[[dict[str, Any]], Any] = echo_reply
    output_of: Callable[[Any], Any] = str
    env: dict[str, str] = field(default_factory=dict)  # extra environment for the fresh process
    coverage: Callable[[Any, list[Any]], Any] | None = None  # opto_core.coverage
    unreached: Mapping[str, str] = field(default_factory=dict)  # parameter name -> why it is unreached here


class _Scripted:
    """A started `ScriptedServer` that answers every request with the case's reply."""

    def __init__(self, case: AdapterCase) -> None:
        self.server = ScriptedServer([case.reply], repeat_last=True).start()

    def __enter__(self) -> ScriptedServer:
        return self.server

    def __exit__(self, *exc: Any) -> None:
        self.server.stop()


def _requests_of(server: ScriptedServer, run: Callable[[], Any]) -> tuple[Any, list[bytes]]:
    """Run ``run()`` and return its result with the raw bodies of the model requests it sent."""
    before = len(server.raw_requests)
    result = run()
    return result, server.raw_requests[before:]


def _run(target: Any, example: Any) -> tuple[Any, Graph]:
    output, graph = target.run(example)
    if isinstance(output, BaseException):
        raise AssertionError(f"the target's run failed: {type(output).__name__}: {output}") from output
    return output, graph


# ----- the checks ----------------------------------------------------------------------------------
def discovery_is_stable(case: AdapterCase) -> None:
    with _Scripted(case) as server:
        program = case.make(server.base_url)
        bound = case.bound_parameters(program)
        first, again = bound.parameters(), bound.parameters()
        assert first and [id(p) for p in first] == [id(p) for p in again], "not the same Parameter objects"
        names = [p.name for p in first]
        other = case.bound_parameters(program)
        assert [p.name for p in other.parameters()] == names, "a second discovery gives other names"
        assert other.values(trainable_only=False) == bound.values(trainable_only=False)
        assert set(case.updates) <= set(names), f"updates name unknown parameters: {set(case.updates) - set(names)}"


class _FailingWrite(Binding):
    """Wraps a binding (or a bindingless parameter's value) so that its write fails after the earlier ones."""

    def __init__(self, inner: Binding | None, parameter: Any) -> None:
        self.inner, self.parameter = inner, parameter

    def read(self) -> Any:
        return self.inner.read() if self.inner is not None else self.parameter.value

    def write(self, value: Any) -> None:
        raise OSError("the conformance suite refuses this write")

    def save(self) -> Any:
        return self.inner.save() if self.inner is not None else copy.deepcopy(self.parameter.value)

    def load(self, state: Any) -> None:
        if self.inner is not None:
            self.inner.load(state)
        else:
            self.parameter.value = copy.deepcopy(state)


def a_half_failed_write_rolls_back(case: AdapterCase) -> None:
    with _Scripted(case) as server:
        program = case.make(server.base_url)
        target = case.target(program)
        bound = target.bound
        _, baseline = _requests_of(server, lambda: _run(target, case.example))
        before = bound.values(trainable_only=False)
        order = [n for n in bound.names() if n in case.updates]
        assert len(order) >= 2, "the case needs updates for at least two parameters"
        last = bound[order[-1]]
        original = bound.binding(last.name)
        bound.add(last, _FailingWrite(original, last))
        try:
            try:
                target.apply(dict(case.updates))
            except WriteError:
                pass
            else:
                raise AssertionError("the refused write did not fail the apply")
        finally:
            bound.add(last, original)
        assert bound.values(trainable_only=False) == before, "values written before the failure were not restored"
        _, after = _requests_of(server, lambda: _run(target, case.example))
        assert after == baseline, "the next model requests differ after the rollback"


def snapshot_restore_gives_identical_requests(case: AdapterCase) -> None:
    with _Scripted(case) as server:
        target = case.target(case.make(server.base_url))
        _, baseline = _requests_of(server, lambda: _run(target, case.example))
        snapshot = target.snapshot()
        target.apply(dict(case.updates))
        _, changed = _requests_of(server, lambda: _run(target, case.example))
        assert changed != baseline, "the written values do not reach the model requests"
        target.restore(snapshot)
        _, restored = _requests_of(server, lambda: _run(target, case.example))
        assert restored == baseline, "after restore the model requests are not byte-identical to before"


def include_exclude(case: AdapterCase) -> None:
    with _Scripted(case) as server:
        names = [p.name for p in case.bound_parameters(case.make(server.base_url)).parameters()]
        chosen = sorted(case.updates)[0]
        only = case.bound_parameters(case.make(server.base_url), include=[chosen])
        assert [p.name for p in only.parameters() if p.trainable] == [chosen]
        assert only.names() == names, "include must freeze the others, not drop them"
        without = case.bound_parameters(case.make(server.base_url), exclude=[chosen])
        frozen = {p.name: p.trainable for p in without.parameters()}
        assert frozen[chosen] is False and without.names() == names
        try:
            case.bound_parameters(case.make(server.base_url), include=["no-such-parameter*"])
        except UnknownParameters as exc:
            assert chosen in str(exc), "the error must list the real names"
        else:
            raise AssertionError("a pattern that matches no parameter was accepted")


def graphs_carry_the_shared_meta(case: AdapterCase) -> None:
    with _Scripted(case) as server:
        _, graph = _run(case.target(case.make(server.base_url)), case.example)
        missing = [key for key in META_KEYS if key not in graph.meta]
        assert not missing, f"graph meta lacks {missing}"
        assert graph.meta["framework"] == case.framework, graph.meta["framework"]
        assert graph.outputs, "the graph marks no output"


def graph_json_round_trip(case: AdapterCase) -> None:
    with _Scripted(case) as server:
        _, graph = _run(case.target(case.make(server.base_url)), case.example)
        assert Graph.from_json(graph.to_json()) == graph


def tracing_keeps_the_output(case: AdapterCase) -> None:
    with _Scripted(case) as server:
        native, native_requests = _requests_of(
            server, lambda: case.run_native(case.make(server.base_url), case.example)
        )
        (traced, _), traced_requests = _requests_of(
            server, lambda: _run(case.target(case.make(server.base_url)), case.example)
        )
        assert case.output_of(traced) == case.output_of(native), (traced, native)
        assert traced_requests == native_requests, "tracing changed what the program sends to its model"


def values_deploy_in_a_fresh_process(case: AdapterCase, tmp_dir: str | None = None) -> None:
    import tempfile

    with _Scripted(case) as server, tempfile.TemporaryDirectory(dir=tmp_dir) as folder:
        target = case.target(case.make(server.base_url))
        target.apply(dict(case.updates))
        path = os.path.join(folder, "values.json")
        target.save_values(path)
        saved = json.loads(open(path, encoding="utf-8").read())["values"]
        script = textwrap.dedent(f"""
            import importlib, json, sys
            sys.path.insert(0, {case.path!r})
            def load(spec):
                module, name = spec.split(":")
                return getattr(importlib.import_module(module), name)
            program = load({case.factory!r})({server.base_url!r})
            load({case.apply_path!r})(program, {path!r})
            values = load({case.bound_path!r})(program).values(trainable_only=False)
            print(json.dumps(values, default=str))
        """)
        env = {**os.environ, **case.env}
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env)
        assert done.returncode == 0, done.stderr[-3000:]
        values = json.loads(done.stdout.strip().splitlines()[-1])
        assert {k: values.get(k) for k in saved} == json.loads(json.dumps(saved, default=str)), (values, saved)


def every_parameter_is_reached(case: AdapterCase) -> None:
    if case.coverage is None:
        raise AssertionError("the case has no coverage function: pass AdapterCase(..., coverage=opto_core.coverage)")
    with _Scripted(case) as server:
        target = case.target(case.make(server.base_url))
        report = case.coverage(target, [case.example])
        assert report.judged, f"the coverage check could not judge the run: {report.note}"
        missing = [name for name in report.unreached if name not in case.unreached]
        assert not missing, f"feedback does not reach {missing}:\n{report}"
        stale = [name for name in case.unreached if name in report.reached]
        assert not stale, f"listed as unreached but reached (remove them from unreached=): {stale}"
        unknown = set(case.unreached) - {entry.name for entry in report}
        assert not unknown, f"unreached= names unknown parameters: {sorted(unknown)}"
        assert all(case.unreached.values()), "every parameter in unreached= needs its reason"


#: Every check, in the order a failing adapter is easiest to debug.
CHECKS: tuple[Callable[[AdapterCase], None], ...] = (
    discovery_is_stable,
    include_exclude,
    graphs_carry_the_shared_meta,
    graph_json_round_trip,
    tracing_keeps_the_output,
    snapshot_restore_gives_identical_requests,
    a_half_failed_write_rolls_back,
    values_deploy_in_a_fresh_process,
    every_parameter_is_reached,
)

__all__ = [
    "AdapterCase",
    "CHECKS",
    "a_half_failed_write_rolls_back",
    "discovery_is_stable",
    "echo_reply",
    "every_parameter_is_reached",
    "graph_json_round_trip",
    "graphs_carry_the_shared_meta",
    "include_exclude",
    "snapshot_restore_gives_identical_requests",
    "tracing_keeps_the_output",
    "values_deploy_in_a_fresh_process",
]
