"""Workflows shared by the executor tests: the same optimization must come out the same under every executor.

Only the models are fake: the optimizer's LLM is `ScriptedLLM`, the LangChain chain's model is
`EchoChatModel`; the chain, the tracer and the loop are real.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from typing import Any

from opto_core import Feedback, Parameter
from opto_core.engine.target import FunctionTarget
from opto_core.kernel.trace import capture, op
from opto_core.testing import ScriptedLLM


# ----- plain Python -------------------------------------------------------------------------------------
@op
def scale(x, k):
    """Multiply x by k."""
    return x * k


TRAIN = [{"x": float(i)} for i in range(1, 7)]
VAL = [{"x": 10.0}, {"x": 20.0}, {"x": 30.0}]


def scale_feedback(example, output):
    want = 3 * example["x"]
    return Feedback(-abs(output - want), f"expected {want}, got {output}")


def scale_target(k: float = 1.0) -> FunctionTarget:
    k_param = Parameter("k", "float", k, lower=-100, upper=100)
    return FunctionTarget(lambda x: scale(x, k_param), [k_param])


def say(name: str, value: Any) -> str:
    return json.dumps({"reasoning": f"try {name}={value!r}", "suggestion": {name: value}})


def scale_llm() -> ScriptedLLM:
    return ScriptedLLM([say("k", 0.0), say("k", 3.0), say("k", 2.0)])


# ----- LangChain -----------------------------------------------------------------------------------------
def shouting_reply(messages, call):
    """The fake model shouts when its system prompt tells it to: the prompt parameter matters."""
    system = messages[0].content
    question = messages[-1].content
    return question.upper() if "UPPER CASE" in system else question.lower()


def chain_target():
    """A real prompt | chat model | parser chain (built on the worker too: its model holds a lock)."""
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate

    from opto_adapters.langchain import ChainTarget
    from opto_adapters.langchain.testing import EchoChatModel

    prompt = ChatPromptTemplate.from_messages([("system", "You answer questions."), ("human", "{question}")])
    model = EchoChatModel(reply=shouting_reply)
    return ChainTarget(prompt | model | StrOutputParser(), input_keys=["question"])


CHAIN_TRAIN = [{"question": f"Question number {i}", "answer": f"QUESTION NUMBER {i}"} for i in range(6)]
CHAIN_VAL = [{"question": f"check {i}", "answer": f"CHECK {i}"} for i in range(3)]


def chain_feedback(example, output):
    ok = output == example["answer"]
    return Feedback(1.0 if ok else 0.0, "correct" if ok else f"expected {example['answer']!r}, got {output!r}")


def prompt_name(target) -> str:
    return next(p.name for p in target.parameters() if p.trainable and p.kind == "text")


def chain_llm(name: str) -> ScriptedLLM:
    return ScriptedLLM(
        [
            say(name, "You answer questions in lower case."),
            say(name, "You answer questions in UPPER CASE."),
            say(name, "You answer."),
        ]
    )


# ----- comparing runs --------------------------------------------------------------------------------------
_VOLATILE = {"time", "seconds", "graph", "evaluation_seconds"}


def comparable(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A run's history without wall-clock fields, for comparing runs under different executors."""

    def clean(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items() if k not in _VOLATILE}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    return [clean(record) for record in history]


# ----- targets that wait (for concurrency, timeouts and cancel) -------------------------------------------
class OneWordTarget:
    """The write half of the target protocol for a workflow with one text parameter, ``word``."""

    word: Parameter

    def parameters(self):
        return [self.word]

    def apply(self, updates):
        self.word.value = updates.get("word", self.word.value)

    def snapshot(self):
        return self.word.value

    def restore(self, snapshot):
        self.word.value = snapshot


class WaitingTarget(OneWordTarget):
    """A plain-Python target whose runs wait ``delay`` seconds (async in ``arun``, a sleep in ``run``).

    It counts the runs in flight and records the thread of each, so tests can see how an executor
    ran them. ``slow`` examples (``{"slow": True}``) wait ``slow_delay`` instead.
    """

    def __init__(self, delay: float = 0.05, slow_delay: float = 30.0, async_runs: bool = True) -> None:
        self.word = Parameter("word", "text", "hello")
        self.delay, self.slow_delay = delay, slow_delay
        self.inflight = 0
        self.max_inflight = 0
        self.threads: set[int] = set()
        self.active_counts: list[int] = []
        self._lock = threading.Lock()
        if not async_runs:
            self.arun = None  # type: ignore[assignment]  # the executors look for a callable arun

    def _enter(self) -> None:
        with self._lock:
            self.inflight += 1
            self.max_inflight = max(self.max_inflight, self.inflight)
            self.threads.add(threading.get_ident())
            self.active_counts.append(threading.active_count())

    def _leave(self) -> None:
        with self._lock:
            self.inflight -= 1

    def _result(self, example):
        if example.get("crash"):
            raise RuntimeError("the adapter broke")  # the target itself raises: infrastructure
        with capture() as run:
            run.graph.add_parameter(self.word)
            x = run.input("x", example["x"])
            try:
                out = combine(self.word, x, example.get("fail", False))
            except ValueError as exc:
                return exc, run.graph
            run.mark_output(out)
        return str(out), run.graph

    def run(self, example):
        self._enter()
        try:
            time.sleep(self.slow_delay if example.get("slow") else self.delay)
            return self._result(example)
        finally:
            self._leave()

    async def arun(self, example):
        self._enter()
        try:
            await asyncio.sleep(self.slow_delay if example.get("slow") else self.delay)
            return self._result(example)
        finally:
            self._leave()


@op
def combine(word, x, fail):
    """Say the word and the number."""
    if fail:
        raise ValueError(f"cannot combine {x}")
    return f"{word} {x}"


def word_feedback(example, output):
    return Feedback(float(len(output)), f"pid {os.getpid()}")


def _getstate(self):
    state = dict(self.__dict__)
    state.pop("_lock")
    return state


def _setstate(self, state):
    self.__dict__.update(state)
    self._lock = threading.Lock()


WaitingTarget.__getstate__ = _getstate  # a lock does not pickle: workers get a fresh one
WaitingTarget.__setstate__ = _setstate


def no_key_factory():
    """A target factory that fails on the worker, as one does when the worker lacks an API key."""
    raise ValueError("OPENAI_API_KEY is not set on this worker")


# ----- a workflow that misbehaves on demand (exits, hangs, dies) ------------------------------------------
#: Ends every "spin" run still going in this process (set it when a test is over, so abandoned threads stop).
RELEASE = threading.Event()


def misbehave(example: dict[str, Any]) -> None:
    """What suggested code can do to the process that runs it, chosen by the example's ``do``."""
    import signal

    do = example.get("do", "ok")
    if do == "exit":
        raise SystemExit(0)
    if do == "interrupt":
        raise KeyboardInterrupt
    if do == "spin":  # a busy loop: it never yields, holds the GIL between switches, burns a core
        end = time.monotonic() + example.get("seconds", 60.0)
        release = globals().get("RELEASE")  # looked up, not captured: pickled by value, there is none
        while time.monotonic() < end and not (release is not None and release.is_set()):
            pass
    if do == "sleep":  # a run that never returns but takes no CPU
        time.sleep(example.get("seconds", 10**6))
    if do == "pause":  # a healthy run that takes a while (awaited in arun, slept in run)
        time.sleep(0 if _in_event_loop() else example.get("seconds", 0))
    if do == "die":
        os._exit(example.get("code", 0))
    if do == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if do in ("kill_parent", "term_parent"):  # the process that started this one (a worker's template)
        os.kill(os.getppid(), signal.SIGKILL if do == "kill_parent" else signal.SIGTERM)
        time.sleep(2)
    if do == "mark":  # a side effect outside the run: a file in a directory the example names
        with open(os.path.join(example["dir"], f"marker-{example['x']}"), "w") as handle:
            handle.write(str(os.getpid()))


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class MisbehavingTarget(OneWordTarget):
    """A plain-Python target whose examples choose what the run does to its process (see `misbehave`).

    ``arun`` does the same things synchronously inside a coroutine, the way a careless ``async def``
    tool would: a spin there blocks the event loop's thread.
    """

    def __init__(self) -> None:
        self.word = Parameter("word", "text", "hello")

    def _traced(self, example):
        with capture() as run:
            run.graph.add_parameter(self.word)
            x = run.input("x", example["x"])
            out = combine(self.word, x, False)
            run.mark_output(out)
        return str(out), run.graph

    def run(self, example):
        misbehave(example)
        if example.get("do") == "write_around":  # what `p = PROMPT; p.value = ...` in suggested code does
            self.word.value = "INJECTED"
        return self._traced(example)

    async def arun(self, example):
        await asyncio.sleep(example.get("seconds", 0) if example.get("do") == "pause" else 0)
        misbehave(example)
        if example.get("do") == "write_around":
            self.word.value = "INJECTED"
        return self._traced(example)


def pid_feedback(example, output):
    return Feedback(1.0, f"ran; driver pid {os.getpid()}")
