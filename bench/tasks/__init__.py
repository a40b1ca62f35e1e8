"""The benchmark's task suite: a registry of generated tasks with programmatic metrics.

Every task is made by code with a fixed seed (nothing is downloaded) and has train, validation
and test splits; results are reported on test. A task says which versions of its workflow it
has, and so which optimizers can run on it:

- ``python``: traced plain Python (`opto_core.kernel.trace`) for our optimizers;
- ``trace``: trace-opt bundles for Trace's own OptoPrime;
- ``dspy``: a DSPy program for DSPy's optimizers (and for ours through the DSPy adapter);
- ``framework``: a LangChain / DSPy / AutoGen workflow for ours through that framework's adapter.

    from bench.tasks import get_task, task_names
    task = get_task("boolean_expressions").make(seed=0, quick=True)
    task.trainset, task.valset, task.testset, task.feedback(example, output)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from opto_core.kernel.feedback import Feedback

from . import bbh, numeric, workflows


@dataclass
class DSPyVersion:
    """A task's DSPy program and how DSPy's optimizers see its data and metric."""

    make_program: Callable[[], Any]
    to_example: Callable[[Any], Any]
    output_of: Callable[[Any], Any]
    own_lm: bool = False  # True: the program carries its own (rule-based) LM; no task model is used


@dataclass
class TaskInstance:
    """One generated task: the splits, the feedback function and the versions of the workflow."""

    name: str
    family: str
    metric: str
    lower_is_better: bool
    trainset: list[Any]
    valset: list[Any]
    testset: list[Any]
    feedback: Callable[[Any, Any], Feedback]
    uses_task_model: bool
    python_target: Callable[[Any], Any] | None = None  # (task chat model) -> Target
    trace_program: Callable[[Any], Any] | None = None  # (task chat model) -> TraceProgram
    dspy: DSPyVersion | None = None
    framework: str | None = None  # "langchain" | "dspy" | "autogen"
    framework_workflow: Callable[[], Any] | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def to_metric(self, mean_score: float | None) -> float | None:
        """The reported metric from a mean feedback score (the error is minus the score)."""
        if mean_score is None:
            return None
        return (-mean_score if self.lower_is_better else mean_score) + 0.0  # no -0.0

    @property
    def failure_score(self) -> float:
        """The score of a run that raised: the worst score the metric gives."""
        return -100.0 if self.lower_is_better else 0.0

    def score(self, example: Any, output: Any) -> float:
        """The feedback score of one output (an exception scores 0, as in the loop)."""
        if isinstance(output, BaseException):
            return self.failure_score
        value = self.feedback(example, output).score
        return float(value or 0.0)


@dataclass(frozen=True)
class TaskSpec:
    """A registered task: how to make it, and its sizes (full and ``--quick``)."""

    name: str
    family: str
    description: str
    sizes: tuple[int, int, int]
    quick_sizes: tuple[int, int, int]
    factory: Callable[[int, tuple[int, int, int], dict[str, Any]], TaskInstance]

    def make(
        self, seed: int = 0, quick: bool = False, sizes: Sequence[int] | None = None, **options: Any
    ) -> TaskInstance:
        chosen = tuple(sizes) if sizes is not None else (self.quick_sizes if quick else self.sizes)
        if len(chosen) != 3 or min(chosen) < 1:
            raise ValueError(f"{self.name}: sizes must be three positive numbers (train, val, test), got {chosen}")
        return self.factory(seed, chosen, options)  # type: ignore[arg-type]


TASKS: dict[str, TaskSpec] = {}


def register(spec: TaskSpec) -> TaskSpec:
    if spec.name in TASKS:
        raise ValueError(f"task {spec.name!r} is registered twice")
    TASKS[spec.name] = spec
    return spec


def get_task(name: str) -> TaskSpec:
    try:
        return TASKS[name]
    except KeyError:
        raise KeyError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}") from None


def task_names(family: str | None = None) -> list[str]:
    return [name for name, spec in TASKS.items() if family is None or spec.family == family]


# ----- BBH-style ------------------------------------------------------------------------------------
def _bbh_factory(task: str) -> Callable[[int, tuple[int, int, int], dict[str, Any]], TaskInstance]:
    def make(seed: int, sizes: tuple[int, int, int], options: dict[str, Any]) -> TaskInstance:
        train, val, test = bbh.splits(task, sizes, seed)
        max_tokens = options.get("task_max_tokens", 512)
        module = options.get("dspy_module", "predict")

        def to_example(example: dict[str, str]) -> Any:
            import dspy

            return dspy.Example(question=example["question"], answer=example["answer"]).with_inputs("question")

        return TaskInstance(
            name=task,
            family="bbh",
            metric="accuracy",
            lower_is_better=False,
            trainset=train,
            valset=val,
            testset=test,
            feedback=lambda example, output: bbh.score_answer(task, example, output),
            uses_task_model=True,
            python_target=lambda chat: bbh.python_target(task, chat, max_tokens),
            trace_program=lambda chat: bbh.trace_program(task, chat, max_tokens),
            dspy=DSPyVersion(lambda: bbh.dspy_program(task, module), to_example, lambda pred: pred.answer),
            info={"answer_format": bbh.BBH_TASKS[task].answer_format},
        )

    return make


for _name, _spec in bbh.BBH_TASKS.items():
    register(
        TaskSpec(
            _name,
            "bbh",
            f"BBH-style {_name.replace('_', ' ')} ({_spec.answer_format})",
            sizes=(20, 20, 50),
            quick_sizes=(6, 6, 10),
            factory=_bbh_factory(_name),
        )
    )


# ----- numerical ------------------------------------------------------------------------------------
def _numeric_factory(n_ops: int, n_params: int) -> Callable[[int, tuple[int, int, int], dict[str, Any]], TaskInstance]:
    def make(seed: int, sizes: tuple[int, int, int], options: dict[str, Any]) -> TaskInstance:
        graph, train, val, test = numeric.splits(sizes, seed, n_ops, n_params)
        return TaskInstance(
            name=f"numeric{'' if n_ops == 6 else f'_{n_ops}'}",
            family="numeric",
            metric="abs error",
            lower_is_better=True,
            trainset=train,
            valset=val,
            testset=test,
            feedback=numeric.feedback,
            uses_task_model=False,
            python_target=lambda chat: numeric.python_target(graph),
            trace_program=lambda chat: numeric.trace_program(graph),
            info={"graph": graph.describe(), "hidden": graph.hidden, "initial": graph.initial},
        )

    return make


register(
    TaskSpec(
        "numeric",
        "numeric",
        "Trace's numerical optimization: a random graph of 6 ops, 2 parameters",
        sizes=(10, 10, 30),
        quick_sizes=(6, 6, 10),
        factory=_numeric_factory(6, 2),
    )
)
register(
    TaskSpec(
        "numeric_12",
        "numeric",
        "Trace's numerical optimization: a random graph of 12 ops, 3 parameters",
        sizes=(10, 10, 30),
        quick_sizes=(6, 6, 10),
        factory=_numeric_factory(12, 3),
    )
)


# ----- fix the workflow ---------------------------------------------------------------------------------
def _workflow_factory(framework: str | None) -> Callable[[int, tuple[int, int, int], dict[str, Any]], TaskInstance]:
    def make(seed: int, sizes: tuple[int, int, int], options: dict[str, Any]) -> TaskInstance:
        train, val, test = workflows.splits(sizes, seed)
        instance = TaskInstance(
            name=f"workflow_{framework or 'python'}",
            family="workflow",
            metric="accuracy",
            lower_is_better=False,
            trainset=train,
            valset=val,
            testset=test,
            feedback=workflows.feedback,
            uses_task_model=False,
            framework=framework,
            info={
                "faults": [
                    "prompt: 20% tax (should be 8%)",
                    "tool code: ignores quantities, raises without one",
                    "model setting: temperature 1.3 (rounds above 0.5)",
                ]
            },
        )
        if framework is None:
            instance.python_target = lambda chat: workflows.python_target()
            instance.trace_program = lambda chat: workflows.trace_program()
        else:
            instance.framework_workflow = workflows.FRAMEWORKS[framework]
        if framework == "dspy":

            def to_example(example: dict[str, Any]) -> Any:
                import dspy

                return dspy.Example(**example).with_inputs("question")

            instance.dspy = DSPyVersion(
                lambda: workflows.dspy_workflow().obj, to_example, lambda pred: pred.answer, own_lm=True
            )
        return instance

    return make


register(
    TaskSpec(
        "workflow_python",
        "workflow",
        "fix the cashier workflow, plain Python (3 planted faults)",
        sizes=(8, 8, 20),
        quick_sizes=(4, 4, 8),
        factory=_workflow_factory(None),
    )
)
for _framework in workflows.FRAMEWORKS:
    register(
        TaskSpec(
            f"workflow_{_framework}",
            "workflow",
            f"fix the cashier workflow in {_framework} (3 planted faults)",
            sizes=(8, 8, 20),
            quick_sizes=(4, 4, 8),
            factory=_workflow_factory(_framework),
        )
    )


# ----- traffic control (UXSim) ----------------------------------------------------------------------------
def _traffic_factory(varying: bool) -> Callable[[int, tuple[int, int, int], dict[str, Any]], TaskInstance]:
    def make(seed: int, sizes: tuple[int, int, int], options: dict[str, Any]) -> TaskInstance:
        from . import traffic

        train, val, test = traffic.splits(seed, varying)
        name = "traffic_controller" if varying else "traffic"
        make_target = traffic.controller_target if varying else traffic.python_target
        return TaskInstance(
            name=name,
            family="traffic",
            metric="average delay (s)",
            lower_is_better=True,
            trainset=train,
            valset=val,
            testset=test,
            feedback=traffic.feedback,
            uses_task_model=False,
            python_target=lambda chat: make_target(),
            info={
                "scenario": train[0]["scenario"],
                "references": lambda: traffic.references(seed, varying),
                "available": traffic.available(),
            },
        )

    return make


register(
    TaskSpec(
        "traffic",
        "traffic",
        "UXSim four-way intersection: the two green times of a fixed-time plan (int, [15, 90] s)",
        sizes=(1, 1, 1),
        quick_sizes=(1, 1, 1),
        factory=_traffic_factory(False),
    )
)
register(
    TaskSpec(
        "traffic_controller",
        "traffic",
        "UXSim four-way intersection, shifting demand: the controller's code (queues -> next greens)",
        sizes=(1, 1, 1),
        quick_sizes=(1, 1, 1),
        factory=_traffic_factory(True),
    )
)

__all__ = ["DSPyVersion", "TASKS", "TaskInstance", "TaskSpec", "get_task", "register", "task_names"]
