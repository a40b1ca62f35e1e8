"""The house rules, checked: the core's layers, what it may import, the public names, the old paths.

The import contracts live in ``pyproject.toml`` (``[tool.importlinter]``); these tests run them on the
real tree, and on a copy with one planted import to show that they do catch a break.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    """`lint-imports` on the packages under ``tree``, with the repository's contracts, writing no cache."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--config", str(tree / "pyproject.toml")],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_import_contracts_hold_on_the_tree():
    result = _lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.fixture(scope="module")
def tree_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The packages and the contracts, copied to a temporary folder (sources only)."""
    copy = tmp_path_factory.mktemp("tree")
    for package in ("opto_core", "opto_adapters"):
        shutil.copytree(ROOT / package, copy / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
    return copy


PLANTED = {
    "kernel imports the engine": (
        "opto_core/kernel/files.py",
        "from opto_core.engine.loop import optimize\n",
        "The core's layers",
        "opto_core.kernel.files -> opto_core.engine.loop",
    ),
    "an upward import seen only by type checkers": (
        "opto_core/llm/usage.py",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from opto_core.optimizers.protocol import Proposal\n",
        "The core's layers",
        "opto_core.llm.usage -> opto_core.optimizers.protocol",
    ),
    "the core imports a framework": (
        "opto_core/engine/target.py",
        "import dspy\n",
        "The core imports no adapter and no agent framework",
        "opto_core.engine.target -> dspy",
    ),
    "the core imports an adapter": (
        "opto_core/app/demo.py",
        "from opto_adapters.langchain import ChainTarget\n",
        "The core imports no adapter and no agent framework",
        "opto_core.app.demo -> opto_adapters.langchain",
    ),
    "the kernel imports the LLM client library": (
        "opto_core/kernel/render.py",
        "import openai\n",
        "The kernel talks to no model",
        "opto_core.kernel.render -> openai",
    ),
    "one adapter imports another": (
        "opto_adapters/dspy/metric.py",
        "from opto_adapters.langchain import ChainTarget\n",
        "Adapters are independent",
        "opto_adapters.dspy.metric -> opto_adapters.langchain",
    ),
}


@pytest.mark.parametrize("case", sorted(PLANTED))
def test_a_planted_import_breaks_its_contract(tree_copy: Path, case: str):
    path, line, contract, chain = PLANTED[case]
    target = tree_copy / path
    original = target.read_text()
    target.write_text(original + "\n" + line)
    try:
        result = _lint_imports(tree_copy)
    finally:
        target.write_text(original)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Broken contracts" in result.stdout, result.stdout
    report = result.stdout.split("Broken contracts", 1)[1]
    assert contract in report and chain in report, result.stdout


# The public names. Changing one of these lists is a change of the public API: say it in the docs.
OPTO_CORE_ALL = [
    "AsyncioExecutor",
    "BackwardError",
    "Binding",
    "BoundParameters",
    "BoundTarget",
    "ChatResult",
    "CodePolicy",
    "ContextWindowExceeded",
    "CorruptRun",
    "Coverage",
    "CoverageError",
    "Edge",
    "EvaluationDone",
    "Executor",
    "Feedback",
    "FeedbackError",
    "FunctionTarget",
    "Gateway",
    "GatewayTarget",
    "Graph",
    "GraphError",
    "Hybrid",
    "InfrastructureError",
    "InvalidValue",
    "LLMError",
    "LLMOptimizer",
    "MlflowTracker",
    "Node",
    "NotARun",
    "OPRO",
    "OpenAIChat",
    "OptimizationResult",
    "Optimizer",
    "OptimizerCallFinished",
    "OptimizerCallStarted",
    "OptimizerFailed",
    "OptoPrime",
    "OptoPrimeNoTrace",
    "Parameter",
    "ProblemInstance",
    "ProcessExecutor",
    "Proposal",
    "ProviderFailure",
    "ProviderRetrying",
    "RayExecutor",
    "Redactor",
    "RunDir",
    "RunDirError",
    "RunDirUnwritable",
    "RunDisplay",
    "RunEvent",
    "RunFinished",
    "RunLocked",
    "RunStarted",
    "Sandbox",
    "SandboxUnavailable",
    "Search",
    "SettingError",
    "Settings",
    "StepDecided",
    "StepStarted",
    "Target",
    "Template",
    "TemplateError",
    "TemplateMatch",
    "ThreadExecutor",
    "TrafficParameters",
    "Usage",
    "WorkerLost",
    "WorkflowChanged",
    "WorkflowExit",
    "WriteError",
    "WroteAroundOptimizer",
    "backward",
    "capture",
    "check_placeholders",
    "coverage",
    "evaluate",
    "load_spans",
    "load_values",
    "op",
    "optimize",
    "optimize_offline",
    "provider_failure",
    "redact",
    "register_output_type",
    "register_secret",
    "render",
    "save_values",
    "to_spans",
    "write_report",
]
PACKAGE_ALL = {
    "opto_core.testing": [
        "AdapterCase",
        "CHECKS",
        "ScriptedLLM",
        "ScriptedServer",
        "http_error",
        "quiet_http_server",
        "system_text",
        "tool_call",
    ],
    "opto_core.otel": [
        "OfflineResult",
        "Span",
        "SpanTrace",
        "Traces",
        "load_spans",
        "optimize_offline",
        "read_spans",
        "spans_to_otlp",
        "to_spans",
        "values_diff",
    ],
    "opto_adapters.langchain": [
        "ChainTarget",
        "NoParametersFound",
        "OptoCallbackHandler",
        "apply_values",
        "bound_parameters",
        "optimize_chain",
        "opto_trace",
        "parameters_of",
    ],
    "opto_adapters.dspy": [
        "DSPyTracer",
        "ExampleError",
        "MetricError",
        "OptimizationStopped",
        "OptoTeleprompter",
        "ProgramParameters",
        "ProgramTarget",
        "adapt_metric",
        "apply_values",
        "bound_parameters",
        "load_optimized",
        "parameters_of",
        "save_optimized",
        "sidecar_path",
    ],
    "opto_adapters.autogen": [
        "AgentParameters",
        "AgentTarget",
        "ConversationLog",
        "OptoAgent",
        "RecordingClient",
        "TeamTarget",
        "WriteBackError",
        "adopt_running_loop",
        "apply_values",
        "as_target",
        "bound_of",
        "bound_parameters",
        "build_graph",
        "check_agent",
        "mark_message",
        "message_node_id",
        "parameters_of",
        "run_sync",
        "task_of",
        "wrap_team",
    ],
    "opto_adapters.autogen.ag2": [
        "AG2Target",
        "apply_values",
        "bound_parameters",
        "framework_version",
        "parameters_of",
    ],
}


def test_opto_core_public_names_are_pinned_and_resolve():
    import opto_core

    assert sorted(opto_core.__all__) == sorted(OPTO_CORE_ALL)
    for name in opto_core.__all__:
        assert getattr(opto_core, name) is not None, name


@pytest.mark.parametrize("package", sorted(PACKAGE_ALL))
def test_package_public_names_are_pinned_and_resolve(package: str):
    module = importlib.import_module(package)
    assert sorted(module.__all__) == sorted(PACKAGE_ALL[package])
    for name in module.__all__:
        assert getattr(module, name) is not None, f"{package}.{name}"


# Old paths users may have written (documented before the layers), and the public path each warning names.
OLD_PATHS = [
    ("import opto_core.loop as m; m.optimize", "opto_core.loop moved to opto_core.engine.loop"),
    ("from opto_core.graph import Graph", "opto_core.graph moved to opto_core.kernel.graph"),
    ("from opto_core.rundir import RunDir", "opto_core.rundir moved to opto_core.engine.rundir"),
    (
        "from opto_core.scripted_server import ScriptedServer",
        "opto_core.scripted_server moved to opto_core.testing.scripted_server",
    ),
    ("import opto_core.llm; opto_core.llm.OpenAIChat", "import OpenAIChat from opto_core, not opto_core.llm"),
    ("from opto_core.llm import OpenAIChat", "import OpenAIChat from opto_core, not opto_core.llm"),
    ("from opto_core.optimizers import OptoPrime", "import OptoPrime from opto_core, not opto_core.optimizers"),
    ("from opto_core.optimizers import Search", "import Search from opto_core, not opto_core.optimizers"),
]


@pytest.mark.parametrize(("statement", "message"), OLD_PATHS)
def test_old_paths_still_import_with_a_warning_naming_the_new_one(statement: str, message: str):
    """Each in a fresh interpreter: a module warns when it is first imported."""
    script = textwrap.dedent(f"""
        import json, warnings
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            {statement}
        print(json.dumps([[str(w.message), w.category.__name__, w.filename] for w in caught]))
    """)
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    warned = json.loads(result.stdout.strip().splitlines()[-1])
    ours = [w for w in warned if w[1] == "DeprecationWarning" and message in w[0]]
    assert len(ours) == 1, warned
    assert ours[0][2] == "<string>", f"the warning should point at the user's line, not {ours[0][2]}"


def test_old_module_path_gives_the_same_objects_as_the_new_one():
    script = (
        "import warnings; warnings.simplefilter('ignore'); import opto_core.loop as old, "
        "opto_core.engine.loop as new; from opto_core.optimizers import OptoPrime; import opto_core; "
        "print(old is new, OptoPrime is opto_core.OptoPrime, callable(opto_core.backward))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=120,
        check=True,
    )
    assert result.stdout.split() == ["True", "True", "True"]
