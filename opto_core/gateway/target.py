"""`GatewayTarget`: any program that talks to an OpenAI-compatible endpoint, optimized through the gateway.

    target = GatewayTarget(command=["node", "agent.js"], upstream="https://api.openai.com/v1",
                           api_key=os.environ["OPENAI_API_KEY"], discover_with=trainset[:2])
    result = optimize(target, trainset, feedback_fn, OptoPrime(target.parameters(), llm))
    target.save_values("best.json")          # then: opto gateway --upstream ... --values best.json

Two ways to run the program on one example:

- ``command=[...]``: a subprocess in any language. The example goes to its stdin (``example_via="stdin"``,
  the default) or as its last argument (``"argv"``): a string as it is, anything else as JSON. Its
  stdout (stripped) is the output (``parse_output`` may turn it into something else). Each run gets its
  own base URL in ``OPENAI_BASE_URL`` (``<gateway>/run/<id>/v1``), so runs in parallel never mix, and
  ``OPENAI_API_KEY`` is a dummy when the gateway holds the real key. An exit status other than 0 is
  the run's failure (`ProgramFailed`, with the end of its stderr).
- ``run=callable``: a Python function of the example (``input_keys`` picks the fields it gets), or an
  ``async def`` one (run on an event loop of its own). It runs with ``OPENAI_BASE_URL`` set to the gateway's base URL and its traffic grouped by an open run,
  one example at a time (clients such as the OpenAI Agents SDK's cache their base URL, so the URL
  must not change from run to run). Create the client inside the function, or point it at
  ``target.base_url``.

The parameters are what the gateway owns (`opto_core.gateway.parameters.TrafficParameters`): the
``prompts`` and ``templates`` you declare, and what `discover` proposes from a few runs of the
program (system prompts, the ``settings``, ``models`` and ``tools`` you name). The loop writes values
into them (`BoundTarget`), and the program's next request carries them, with no change to its code.

A run whose program failed after the upstream failed is an infrastructure failure
(`InfrastructureError`: retried, never feedback); a program that failed on its own is feedback.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import subprocess
import threading
import uuid
from collections import deque
from collections.abc import Mapping
from typing import Any, Callable, Iterable, Sequence

from opto_core.engine.executors import InfrastructureError
from opto_core.engine.target import BoundTarget
from opto_core.gateway.graphs import graph_of_run
from opto_core.gateway.proxy import DUMMY_KEY, Gateway
from opto_core.kernel.graph import Graph

log = logging.getLogger("opto.gateway")

#: How much of a failed program's stderr its error keeps.
STDERR_TAIL = 2000
_ENV_LOCK = threading.Lock()


class ProgramFailed(RuntimeError):
    """The program exited with a non-zero status (its stderr's end is in the message)."""

    def __init__(self, status: int, stderr: str) -> None:
        self.status = status
        self.stderr = stderr
        super().__init__(f"the program exited with status {status}" + (f": {stderr}" if stderr else ""))


class GatewayTarget(BoundTarget):
    """A program run through a recording, rewriting gateway, as a target of `optimize` (see the module doc).

    ``upstream`` (with ``api_key``) starts a gateway of its own on loopback, stopped by `close`;
    ``gateway=`` shares one you started. ``prompts`` maps names to exact texts and ``templates`` names
    to templates (`TrafficParameters.prompt`). ``discover_with`` runs those examples once now and
    adds what `discover` proposes. ``timeout`` bounds one run of a command (seconds).
    """

    framework = "gateway"

    def __init__(
        self,
        run: Callable[[Any], Any] | None = None,
        command: Sequence[str] | None = None,
        *,
        upstream: str | None = None,
        api_key: str | None = None,
        gateway: Gateway | None = None,
        prompts: Mapping[str, str] | None = None,
        templates: Mapping[str, str] | None = None,
        settings: Iterable[str] = (),
        models: list[str] | None = None,
        tools: Iterable[str] = (),
        discover_with: Sequence[Any] | None = None,
        min_runs: int = 2,
        input_keys: Iterable[str] | None = None,
        example_via: str = "stdin",
        parse_output: Callable[[str], Any] | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        timeout: float = 300.0,
        keep_graphs: int = 100,
        record_dir: str | None = None,
    ) -> None:
        if (run is None) == (command is None):
            raise ValueError(
                "GatewayTarget needs exactly one of run=<a Python function of the example> or "
                "command=[program, args...]"
            )
        if run is not None and not callable(run):
            raise TypeError(f"run must be a function of one example, got {type(run).__name__}")
        if command is not None and (isinstance(command, str) or not command):
            raise TypeError("command must be a list of strings, e.g. ['node', 'agent.js'] (no shell)")
        if example_via not in ("stdin", "argv"):
            raise ValueError(f"example_via must be 'stdin' or 'argv', got {example_via!r}")
        if gateway is None:
            if upstream is None:
                raise ValueError("give upstream=<the real endpoint's base URL> (or gateway=<a running Gateway>)")
            gateway = Gateway(upstream, api_key=api_key, record_dir=record_dir)
            self._owns_gateway = True
        else:
            self._owns_gateway = False
        self.gateway = gateway.start()
        self._run, self.command = run, list(command) if command is not None else None
        self.input_keys = list(input_keys) if input_keys is not None else None
        self.example_via, self.parse_output = example_via, parse_output
        self.env, self.cwd, self.timeout = dict(env or {}), cwd, timeout
        self.settings, self.models, self.tools = list(settings), models, list(tools)
        self.min_runs = min_runs
        self.graphs: deque[Graph] = deque(maxlen=keep_graphs)
        self._serial = threading.Lock()
        traffic = self.gateway.parameters
        for name, text in (prompts or {}).items():
            traffic.prompt(name, text)
        for name, template in (templates or {}).items():
            traffic.prompt(name, template=template, role=_template_role(name))
        self.bound = traffic.bound
        if discover_with:
            self.discover(discover_with)

    # ----- finding parameters ---------------------------------------------------------------------------
    def discover(self, examples: Sequence[Any], *, min_runs: int | None = None) -> list[Any]:
        """Run ``examples`` and add the parameters their traffic shows (`TrafficParameters.propose`).

        Returns the new parameters. A system prompt must appear in ``min_runs`` of these runs (default:
        the target's ``min_runs``, at most the number of examples) to become a parameter.
        """
        inputs, errors = {}, []
        for example in examples:
            run_id = self._new_run_id()
            _, error = self._execute(example, run_id)
            if error is not None:
                errors.append(f"{type(error).__name__}: {error}")
            inputs[run_id] = self._inputs(example)
        runs = [self.gateway.run(run_id) for run_id in inputs]
        if errors:
            log.warning("GatewayTarget.discover: %d of %d runs failed (%s)", len(errors), len(runs), errors[0][:500])
        if not any(run.exchanges for run in runs):
            log.warning(
                "GatewayTarget.discover: the program sent no model request through the gateway; its client "
                "must read OPENAI_BASE_URL when it is created (create it inside the function, or pass "
                "base_url=target.base_url) and call chat/completions or responses"
            )
        return self.gateway.parameters.propose(
            runs,
            min_runs=min_runs or self.min_runs,
            settings=self.settings,
            tools=self.tools,
            models=self.models,
            inputs=inputs,
        )

    # ----- the target protocol -------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return self.gateway.base_url

    def run(self, example: Any) -> tuple[Any, Graph]:
        run_id = self._new_run_id()
        output, error = self._execute(example, run_id)
        run = self.gateway.run(run_id)
        if error is not None and run.failures:
            failure = run.failures[-1]
            infra = InfrastructureError(f"the upstream failed ({failure.error}) and the program then failed: {error}")
            infra.__cause__ = error
            error = infra
        graph = graph_of_run(run, self.gateway.parameters, output=None if error is not None else output, error=error)
        self.graphs.append(graph)
        return (error if error is not None else output), graph

    @property
    def last_graph(self) -> Graph | None:
        return self.graphs[-1] if self.graphs else None

    def save_values(self, path: str, **meta: Any) -> Any:
        """The trainable values as ``opto-values/1``, with the gateway's rules, for ``opto gateway --values``."""
        return self.gateway.parameters.save_values(path, self.bound.values(), **meta)

    def close(self) -> None:
        """Stop the gateway this target started (a shared one is left running)."""
        if self._owns_gateway:
            self.gateway.stop()

    def __enter__(self) -> GatewayTarget:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ----- running the program ---------------------------------------------------------------------------
    def _new_run_id(self) -> str:
        return uuid.uuid4().hex[:16]

    def _inputs(self, example: Any) -> Any:
        if self.input_keys is None or not isinstance(example, Mapping):
            return example
        missing = [k for k in self.input_keys if k not in example]
        if missing:
            raise KeyError(f"the example has no {missing}; its keys are {list(example)}")
        return {k: example[k] for k in self.input_keys}

    def _execute(self, example: Any, run_id: str) -> tuple[Any, BaseException | None]:
        inputs = self._inputs(example)
        try:
            if self.command is not None:
                return self._subprocess(inputs, run_id), None
            return self._call(inputs, run_id), None
        except Exception as exc:  # the program's failure is the run's result, not a crash of the loop
            return None, exc
        finally:
            if not self.gateway.recorder.settle(run_id):
                log.warning(
                    "GatewayTarget: run %s still had a model call in flight after the program ended; "
                    "its graph leaves it out",
                    run_id,
                )
            self.gateway.recorder.close(run_id)

    def _subprocess(self, inputs: Any, run_id: str) -> Any:
        self.gateway.recorder.ensure(run_id)
        text = inputs if isinstance(inputs, str) else json.dumps(inputs, ensure_ascii=False)
        env = {**os.environ, **self.env, "OPENAI_BASE_URL": self.gateway.run_url(run_id), "OPTO_RUN_ID": run_id}
        if self.gateway.holds_key:
            env["OPENAI_API_KEY"] = DUMMY_KEY
        assert self.command is not None
        argv = [*self.command, text] if self.example_via == "argv" else self.command
        try:
            done = subprocess.run(
                argv,
                input=text if self.example_via == "stdin" else "",
                capture_output=True,
                text=True,
                env=env,
                cwd=self.cwd,
                timeout=self.timeout,
            )
        except subprocess.TimeoutExpired as exc:
            raise ProgramFailed(-9, f"killed after {self.timeout} s (timeout)") from exc
        if done.returncode != 0:
            raise ProgramFailed(done.returncode, done.stderr[-STDERR_TAIL:].strip())
        out = done.stdout.strip()
        return self.parse_output(out) if self.parse_output is not None else out

    def _call(self, inputs: Any, run_id: str) -> Any:
        with self._serial, self.gateway.open_run(run_id), _environment(self._environ()):
            assert self._run is not None
            result = self._run(inputs)
            if inspect.isawaitable(result):  # an `async def` program: run it to the end on a loop of its own
                result = asyncio.run(_awaited(result))
            return result

    def _environ(self) -> dict[str, str]:
        env = {**self.env, "OPENAI_BASE_URL": self.gateway.base_url}
        if self.gateway.holds_key:
            env["OPENAI_API_KEY"] = DUMMY_KEY
        return env


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


class _environment:
    """Set environment variables for the length of a block, then put back what was there."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self.values = values
        self.saved: dict[str, str | None] = {}

    def __enter__(self) -> None:
        _ENV_LOCK.acquire()
        for key, value in self.values.items():
            self.saved[key] = os.environ.get(key)
            os.environ[key] = value

    def __exit__(self, *exc: Any) -> None:
        try:
            for key, value in self.saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        finally:
            _ENV_LOCK.release()


def _template_role(name: str) -> str:
    """A declared template's role from its name: ``*.system`` -> system, ``*.assistant``, else user."""
    for role in ("system", "assistant"):
        if name.endswith("." + role):
            return role
    return "user"
