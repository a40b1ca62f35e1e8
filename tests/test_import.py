"""`import opto_core` pulls in no agent framework and no LLM client."""

import json
import subprocess
import sys


def test_core_imports_no_framework():
    code = (
        "import sys, json, opto_core; from opto_core import Graph, Parameter, Feedback, backward, render; "
        "from opto_core.kernel.trace import op, capture; "
        "print(json.dumps(sorted(m.split('.')[0] for m in sys.modules)))"
    )
    loaded = set(
        json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    )
    for framework in (
        "langchain_core",
        "langgraph",
        "dspy",
        "autogen_agentchat",
        "autogen_core",
        "openai",
        "litellm",
        "opto_adapters",
        "xllamacpp",
    ):
        assert framework not in loaded, framework


def test_public_names():
    import opto_core
    from opto_core import Feedback, Graph, Parameter, backward, render  # noqa: F401
    from opto_core.optimizers.opro import OPRO  # noqa: F401
    from opto_core.optimizers.optoprime import OptoPrime

    assert callable(opto_core.backward) and callable(opto_core.render)
    assert opto_core.OptoPrime is OptoPrime and callable(opto_core.optimize)
