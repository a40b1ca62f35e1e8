"""Classic AutoGen (AG2: PyPI ``autogen`` 0.14.x, ``import autogen``) as an OPTO target.

    from opto_adapters.autogen.ag2 import AG2Target, parameters_of, apply_values

    def chat(example):                      # start the conversation your way, return its result
        return user.initiate_chat(assistant, message=example["question"], max_turns=4).summary

    target = AG2Target(chat, [assistant, user])
    optimize(target, trainset, feedback_fn, optimizer)   # opto_core.engine.loop.optimize, unchanged
    target.save_values("ag2.values.json"); apply_values([assistant, user], "ag2.values.json")

The API is the classic one (``ConversableAgent``, ``register_function``, ``GroupChat`` +
``GroupChatManager``), as installed by ``autogen`` 0.14 (or ``ag2`` < 1.0, or ``pyautogen`` 0.3-0.9);
``ag2`` >= 1.0 is a different API and is not supported here. How it works:
`ag2_recording` (AG2 events -> conversation records -> `opto_core.kernel.conversation.build_graph`) and
`ag2_parameters` (AG2 objects <-> bindings of `opto_core.kernel.binding`).
"""

from __future__ import annotations

try:
    import autogen
    from autogen import GroupChatManager  # the classic API
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "the classic AutoGen (AG2) adapter needs the `autogen` package 0.14.x: pip install 'opto-adapters[ag2]'"
    ) from exc

import threading
from collections import deque
from collections.abc import Mapping
from typing import Any, Callable, Iterable

from opto_adapters.autogen.ag2 import tracing as recording
from opto_adapters.autogen.ag2.parameters import AG2Parameters, discover
from opto_core.engine.target import BoundTarget
from opto_core.kernel.conversation import build_graph
from opto_core.kernel.graph import Graph

ADAPTER = "opto_adapters.autogen.ag2"
FRAMEWORK = "autogen"  # the distribution name

__all__ = ["AG2Target", "framework_version"]


def framework_version() -> str:
    return getattr(autogen, "__version__", "")


class AG2Target(BoundTarget):
    """A classic AutoGen conversation as a target of `opto_core.engine.loop.optimize`.

    ``run(example)`` starts the conversation the user's way (``initiate_chat``, a GroupChat
    manager, ...) and returns its result; ``agents`` are the agents, GroupChats and managers
    whose parameters are optimized and whose messages are recorded (an agent left out still
    talks, but is not recorded as a speaker). ``input_keys``: when given and the example is a
    mapping, ``run`` receives only those keys (labels stay out of the conversation).

    One conversation at a time: AG2 agents keep per-partner state, so ``run`` holds a lock.
    A conversation that raises returns ``(exception, graph)`` with the exception node marked
    as an output: a failure is feedback, not a crash.
    """

    framework = FRAMEWORK

    def __init__(
        self,
        run: Callable[[Any], Any],
        agents: Any,
        input_keys: Iterable[str] | None = None,
        *,
        include: Iterable[str] | None = None,
        exclude: Iterable[str] | None = None,
        name: str | None = None,
        keep_graphs: int = 100,
    ) -> None:
        if not callable(run):
            raise TypeError(f"run must be a function of one example, got {type(run).__name__}")
        self._run = run
        self.params: AG2Parameters = discover(agents, include, exclude, run=run)
        self.bound = self.params.bound
        self.framework_version = framework_version()
        self.input_keys = list(input_keys) if input_keys is not None else None
        self.name = name or getattr(run, "__name__", "ag2_chat")
        self.graphs: deque[Graph] = deque(maxlen=keep_graphs)
        self._lock = threading.Lock()
        self._pending: dict[str, tuple[str, Any]] = {}  # written values the next request should show
        self._speakers = [a for a in self.params.agents if not isinstance(a, GroupChatManager)]
        for agent in self._speakers:
            recording.attach(agent)

    @property
    def notes(self) -> list[str]:
        """What has no parameters and why (agents without llm_config, non-auto selection, ...)."""
        return list(self.params.notes)

    @property
    def last_graph(self) -> Graph | None:
        return self.graphs[-1] if self.graphs else None

    # ----- the target protocol ------------------------------------------------------------------
    def run(self, example: Any) -> tuple[Any, Graph]:
        inputs = example
        if self.input_keys is not None and isinstance(example, Mapping):
            missing = [k for k in self.input_keys if k not in example]
            if missing:
                raise KeyError(f"the example has no {missing}; its keys are {list(example)}")
            inputs = {k: example[k] for k in self.input_keys}
        with self._lock:
            manager = self.params.manager
            rec = recording.Recording(self.name, selector_name=manager.name if manager else None, checks=self._pending)
            token = recording.begin(rec, self._speakers)
            output: Any = None
            error: BaseException | None = None
            try:
                output = self._run(inputs)
            except Exception as exc:  # a failing conversation is feedback, not a crash of the loop
                error = exc
            finally:
                recording.end(rec, self._speakers, token)
                rec.finish(error)
            self._pending = rec.checks  # written values no request has shown yet
            graph = build_graph(
                rec.log,
                self.params.roles,
                adapter=ADAPTER,
                framework=FRAMEWORK,
                framework_version=self.framework_version,
            )
            self.graphs.append(graph)
        return (error if error is not None else output), graph

    def apply(self, updates: dict[str, Any]) -> None:
        written = self.bound.apply(updates)
        self._pending.update(self.params.request_checks(written))

    def restore(self, snapshot: Any) -> None:
        self.bound.restore(snapshot)
        self._pending = self.params.request_checks(n for n in snapshot if n in self._pending)

    def detach(self) -> None:
        """Remove the recording hook from the agents (they keep working unrecorded)."""
        for agent in self._speakers:
            recording.detach(agent)
