"""A DSPy program as an optimization target (`opto_core.engine.target.Target`).

``run(example)`` calls the program on the example's inputs under a fresh `DSPyTracer` (in a
``dspy.context``, so concurrent runs in the loop's threads never share state) and returns the
Prediction and its graph. The DSPy settings of the thread that built the target (the LM, the
adapter, callbacks set with ``dspy.context``) are carried into every run, since the loop's
worker threads do not inherit DSPy's thread-local context.
"""

from __future__ import annotations

import contextlib
import inspect
import time
from typing import Any, Iterator, Sequence

import dspy
from dspy.utils.usage_tracker import track_usage

from opto_adapters.dspy._compat import context_overrides, input_keys
from opto_adapters.dspy.parameters import FRAMEWORK, ProgramParameters
from opto_adapters.dspy.tracing import DSPyTracer, node_names, untag_prediction
from opto_core.engine.target import BoundTarget
from opto_core.kernel.graph import META_DURATION, META_USAGE, Graph

#: Thread-local DSPy settings that belong to one call, never carried into another thread's run.
_CALL_SCOPED = {
    "trace",
    "usage_tracker",
    "caller_modules",
    "caller_predict",
    "send_stream",
    "callbacks",
    "stream_listeners",
}


class ExampleError(ValueError):
    """An example the program cannot be called with (its inputs are unknown or missing)."""


class ProgramTarget(BoundTarget):
    """Run, trace and change one DSPy program (it is changed in place: pass a copy to keep the original).

    The write half (parameters, apply, snapshot, restore, save_values) is the kit's `BoundTarget`
    over the program's `ProgramParameters` (``self.bound``, also ``self.params``).
    """

    framework = FRAMEWORK
    framework_version = getattr(dspy, "__version__", "")

    def __init__(
        self,
        program: Any,
        *,
        parameters: ProgramParameters | None = None,
        include: list[str] | None = None,
        exclude: list[str] | None = None,
        optimize_lm_settings: bool = True,
        optimize_demos: bool = True,
        lm_bounds: dict[str, tuple[float, float]] | None = None,
        lm: Any = None,
        input_keys: Sequence[str] | None = None,
        name: str | None = None,
        context: dict[str, Any] | None = None,
    ) -> None:
        self.program = program
        self.bound = self.params = parameters or ProgramParameters(
            program,
            include=include,
            exclude=exclude,
            optimize_lm_settings=optimize_lm_settings,
            optimize_demos=optimize_demos,
            lm_bounds=lm_bounds,
        )
        self.input_keys = list(input_keys) if input_keys is not None else None
        self.name = name or type(program).__name__
        captured = context_overrides() if context is None else dict(context)
        self.callbacks = list(captured.get("callbacks", dspy.settings.get("callbacks", None)) or [])
        self.context = {k: v for k, v in captured.items() if k not in _CALL_SCOPED}
        if lm is not None:
            self.context["lm"] = lm
        self._names: dict[int, str] | None = None

    def clients(self) -> list[Any]:
        """The LMs this program calls (its own, the context's, DSPy's configured one): the loop's redactor
        reads their keys, ``extra_headers`` and ``organization`` so none of them is ever written or sent."""
        lms = [self.context.get("lm"), dspy.settings.get("lm", None)]
        lms += [predictor.lm for _, predictor in self.params.predictors]
        return [lm for lm in lms if lm is not None]

    # ----- running --------------------------------------------------------------------------------------
    def inputs_of(self, example: Any) -> dict[str, Any]:
        """The program's keyword arguments for ``example``: ``input_keys`` if given, else the keys of its
        ``with_inputs(...)``; a `dspy.Example` without them is refused (its labels would be lost);
        a plain dict passes the fields the program declares as inputs."""
        if isinstance(example, dspy.Example):
            keys = input_keys(example)
            data = dict(example.items())
        elif isinstance(example, dict):
            keys, data = None, dict(example)
        else:
            raise ExampleError(
                f"an example must be a dspy.Example or a dict, got {type(example).__name__}: {example!r:.120}"
            )
        if self.input_keys is not None:
            keys = self.input_keys
        elif keys is None and isinstance(example, dspy.Example):
            suggested = [k for k in self._program_inputs() if k in data] or list(data)[:1]
            call = ", ".join(repr(k) for k in suggested)
            raise ExampleError(
                f"the example does not say which fields are inputs: call .with_inputs({call}) on "
                f"it (the other fields are labels: the metric and the optimizer's feedback read "
                f"them, the program never sees them), or pass input_keys=[{call}] "
                f"(example: {example!r:.120})"
            )
        if keys is None:
            keys = [k for k in self._program_inputs() if k in data]
            if not keys:
                raise ExampleError(
                    f"cannot tell which fields of the example are inputs: call "
                    f"example.with_inputs(...) or pass input_keys= (example: {example!r:.120})"
                )
        missing = [k for k in keys if k not in data]
        if missing:
            raise ExampleError(f"the example lacks the input fields {missing}: {example!r:.160}")
        return {k: data[k] for k in keys}

    def _program_inputs(self) -> list[str]:
        signature = getattr(self.program, "signature", None)
        if signature is not None and hasattr(signature, "input_fields"):
            return list(signature.input_fields)
        predict = getattr(self.program, "predict", None)  # ChainOfThought
        if predict is not None and hasattr(getattr(predict, "signature", None), "input_fields"):
            return list(predict.signature.input_fields)
        try:
            parameters = inspect.signature(self.program.forward).parameters.values()
        except (TypeError, ValueError):
            return []
        return [p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]

    def run(self, example: Any) -> tuple[Any, Graph]:
        tracer, run, traced = self._begin(example)
        started = time.time()
        try:
            with self._traced(tracer) as usage:
                output = self.program(**traced)
        except Exception as exc:  # a failure is feedback for the loop, not a crash
            output, usage = exc, None
        return self._end(tracer, run, output, usage, started)

    async def arun(self, example: Any) -> tuple[Any, Graph]:
        """`run` on the caller's event loop (``program.acall``), for ``executor="asyncio"``.

        DSPy runs a module asynchronously only when it defines ``aforward`` (``Predict``,
        ``ChainOfThought``, ``ReAct`` do; a custom module with only ``forward`` does not): such a
        program runs in a worker thread instead (``asyncio.to_thread``), with the same result.
        """
        if not hasattr(self.program, "aforward"):
            import asyncio

            return await asyncio.to_thread(self.run, example)
        tracer, run, traced = self._begin(example)
        started = time.time()
        try:
            with self._traced(tracer) as usage:
                output = await self.program.acall(**traced)
        except Exception as exc:  # a failure is feedback for the loop, not a crash
            output, usage = exc, None
        return self._end(tracer, run, output, usage, started)

    def coverage_fix(self, parameter: Any, cause: str) -> str | None:
        """What to try when feedback does not reach ``parameter``, in DSPy's terms (for `opto_core.coverage`)."""
        if cause != "off_path":
            return None
        return (
            f"what the predictor of {parameter.name} produced was not found in the later steps' inputs nor in "
            f"the output: a value your forward() changes before handing it on (rounded, a bool or a short number inside a sentence) "
            f"cannot be matched to the step that made it; hand the field on as it is or with str() (an f-string "
            f"that holds a longer value works too), or return it in the dspy.Prediction"
        )

    @contextlib.contextmanager
    def _traced(self, tracer: DSPyTracer) -> Iterator[Any]:
        """The DSPy context of one traced run (its callbacks, a fresh trace) and its token usage."""
        with dspy.context(**self.context, callbacks=[*self.callbacks, tracer], trace=[]):
            with track_usage() as usage:
                yield usage

    def _begin(self, example: Any) -> tuple[DSPyTracer, Any, dict[str, Any]]:
        inputs = self.inputs_of(example)
        if self._names is None:  # the program's structure does not change, its parameters' values do
            self._names = node_names(self.program, self.params)
        tracer = DSPyTracer(parameters=self.params, name=self.name, names=self._names)
        run, traced = tracer.begin(inputs)
        return tracer, run, traced

    def _end(self, tracer: DSPyTracer, run: Any, output: Any, usage: Any, started: float) -> tuple[Any, Graph]:
        graph = run.graph
        if isinstance(output, BaseException) and not graph.outputs:  # raised before any traced call
            graph.add_exception(self.name, output, op_type="dspy.Module")
        graph.meta[META_DURATION] = round(time.time() - started, 4)
        if usage is not None:
            by_model = usage.get_total_tokens()
            graph.meta[META_USAGE] = {
                key: sum(int(u.get(key) or 0) for u in by_model.values())
                for key in ("prompt_tokens", "completion_tokens")
            }
            if by_model:
                graph.meta["usage_by_model"] = {
                    m: {k: u.get(k) for k in ("prompt_tokens", "completion_tokens")} for m, u in by_model.items()
                }
        if tracer.errors:
            graph.meta.setdefault("trace_errors", list(tracer.errors))
        if not isinstance(output, BaseException):
            untag_prediction(output)
        return output, graph
