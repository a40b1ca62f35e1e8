"""One redactor for secrets: keys from the environment, from the clients a run knows (LangChain, DSPy,
the optimizer's own) and URL credentials never reach a run file, a report, a drawing, a log line, the
terminal or the request sent to the optimizer's endpoint, even when a workflow's exception (an SDK's
401 message) or its feedback echoes them. Every key here is fake and looks like no real key format."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from opto_core import Parameter, optimize
from opto_core.app.report import write_graph_files, write_report
from opto_core.engine.target import FunctionTarget
from opto_core.kernel.redact import REDACTOR, Redactor, redact, secret_env_name
from opto_core.kernel.trace import op
from opto_core.optimizers.optoprime import OptoPrime
from opto_core.testing import ScriptedLLM, ScriptedServer

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # litellm must not fetch its price list
ANSWER = json.dumps({"reasoning": "r", "suggestion": {}})


def leaks(run_dir: Path, llm: ScriptedLLM, secrets: list[str]) -> list[str]:
    """Where any of ``secrets`` still appears: run files, the report, the drawings, optimizer requests."""
    write_report(str(run_dir))
    for graph in sorted((run_dir / "graphs").glob("step-*.json"))[:1]:
        write_graph_files(str(graph), str(run_dir / "drawings"))
    found = []
    for path in run_dir.rglob("*"):
        if path.is_file():
            text = path.read_text(encoding="utf-8", errors="replace")
            found += [f"{path.name}: {secret}" for secret in secrets if secret in text]
    sent = json.dumps(llm.requests, ensure_ascii=False)
    found += [f"optimizer request: {secret}" for secret in secrets if secret in sent]
    return found


# ----- plain Python: an environment secret echoed by the workflow -------------------------------------------
STYLE = Parameter("style", "text", "terse")


@op
def call_service(question: str, style: str) -> str:
    raise RuntimeError(f"401 Unauthorized: invalid key {os.environ['PAPER_SERVICE_API_KEY']!r} for {question}")


def test_an_environment_key_echoed_in_an_exception_and_feedback_is_redacted_everywhere(tmp_path, monkeypatch, caplog):
    secret = "zq-paper-credential-7731-plain"
    monkeypatch.setenv("PAPER_SERVICE_API_KEY", secret)
    target = FunctionTarget(lambda question: call_service(question, STYLE), [STYLE], input_keys=["question"])
    llm = ScriptedLLM(
        [json.dumps({"reasoning": f"the key {secret} is wrong", "suggestion": {"style": "polite"}})], repeat_last=True
    )
    with caplog.at_level(logging.DEBUG):
        result = optimize(
            target,
            [{"question": "q"}],
            lambda e, o: (0.0, f"failed with {o}"),
            OptoPrime(target.parameters(), llm),
            max_steps=2,
            run_dir=str(tmp_path / "run"),
        )
        logging.getLogger("workflow").warning("calling with %s", {"api_key": secret})  # any logger, after a run
    assert result.steps == 2
    assert leaks(tmp_path / "run", llm, [secret]) == []
    assert secret not in caplog.text and "***" in caplog.text


def test_the_live_display_the_summary_and_mlflow_show_no_echoed_key(tmp_path, monkeypatch):
    """The progress lines (decision, changes, reasoning), the result block and every MLflow param,
    tag and artifact (step records, summary) pass the redactor like the run files do."""
    mlflow = pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient
    from rich.console import Console

    from opto_core.engine.progress import RunDisplay

    secret = "zq-paper-credential-5583-display"
    monkeypatch.setenv("PAPER_SERVICE_API_KEY", secret)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    mlflow.set_tracking_uri((tmp_path / "mlruns").as_uri())
    target = FunctionTarget(lambda question: call_service(question, STYLE), [STYLE], input_keys=["question"])
    llm = ScriptedLLM(
        [json.dumps({"reasoning": f"the key {secret} is wrong", "suggestion": {"style": f"polite {secret}"}})],
        repeat_last=True,
    )
    shown = Console(record=True, width=200, force_terminal=False)
    try:
        result = optimize(
            target,
            [{"question": "q"}],
            lambda e, o: (0.0, f"failed with {o}"),
            OptoPrime(target.parameters(), llm),
            max_steps=2,
            run_dir=str(tmp_path / "run"),
            on_event=RunDisplay(shown),
            tracking="mlflow",
        )
    finally:
        mlflow.set_tracking_uri(None)
    text = shown.export_text()
    assert "optimizer's reasoning: the key *** is wrong" in text and secret not in text
    assert secret not in result.summary()
    stored = [p for p in (tmp_path / "mlruns").rglob("*") if p.is_file()]
    assert any(p.name == "step-001.json" for p in stored) and any(p.name == "summary.txt" for p in stored)
    assert [p for p in stored if secret.encode() in p.read_bytes()] == []
    run = MlflowClient(tracking_uri=(tmp_path / "mlruns").as_uri()).search_runs(["0"])[0]
    assert not [v for v in [*run.data.params.values(), *run.data.tags.values()] if secret in v]


def test_env_names_that_say_secret():
    for name in (
        "OPENAI_API_KEY",
        "HF_TOKEN",
        "DB_PASSWORD",
        "MY_SERVICE_SECRET",
        "GITHUB_TOKEN",
        "ANTHROPIC_API_KEY",
        "AWS_SECRET_ACCESS_KEY",
        "SERVICE_APIKEY",
        "OPENAI_ORGANIZATION",
    ):
        assert secret_env_name(name), name
    for name in (
        "PWD",
        "OLDPWD",
        "SSH_AUTH_SOCK",
        "TOKENIZERS_PARALLELISM",
        "OPTO_MAX_TOKENS",
        "KEY_PATH",
        "PATH",
        "HOME",
        "AWS_ACCESS_KEY_ID",
    ):
        assert not secret_env_name(name), name


def test_the_redactor_catches_every_spelling_and_url_credentials():
    redactor = Redactor(environ={"X_TOKEN": 'zq"quoted\\token-1', "SHORT_KEY": "abc"})
    redactor.register("zq-registered-4242-x")
    text = json.dumps({"a": 'zq"quoted\\token-1', "b": "zq-registered-4242-x"})
    assert "zq" not in redactor.redact(text) and json.loads(redactor.redact(text)) == {"a": "***", "b": "***"}
    assert redactor.redact("&lt;zq-registered-4242-x") == "&lt;***"
    assert (
        redactor.redact("abc stays: too short to be masked everywhere")
        == "abc stays: too short to be masked everywhere"
    )
    assert redactor.redact("http://bob:pw-1@h/v1?api_key=zz&x=1") == "http://***@h/v1?api_key=***&x=1"
    assert not redactor.register("ollama") and not redactor.register("short")


# ----- LangChain: the model client's key, echoed by the SDK's 401 -----------------------------------------------
def test_a_langchain_model_key_echoed_by_a_401_is_redacted(tmp_path):
    pytest.importorskip("langchain_openai")
    from langchain_core.prompts import ChatPromptTemplate
    from langchain_openai import ChatOpenAI

    from opto_adapters.langchain import ChainTarget

    key = "zq-paper-langchain-credential-1188"
    with ScriptedServer() as server:
        server.fail_with = (401, f"Incorrect API key provided: {key}. Find your key at the dashboard.")
        model = ChatOpenAI(model="scripted", base_url=server.base_url, api_key=key, max_retries=0)
        chain = ChatPromptTemplate.from_messages([("system", "Be brief."), ("human", "{question}")]) | model
        target = ChainTarget(chain)
        llm = ScriptedLLM([ANSWER], repeat_last=True)
        optimize(
            target,
            [{"question": "q"}],
            lambda e, o: (0.0, str(o)),
            OptoPrime(target.parameters(), llm),
            max_steps=1,
            run_dir=str(tmp_path / "run"),
        )
    assert "Incorrect API key" in (tmp_path / "run" / "history.jsonl").read_text()  # the error is there...
    assert leaks(tmp_path / "run", llm, [key]) == []  # ... without the key


# ----- DSPy: api_key, extra_headers and organization --------------------------------------------------------------
def test_dspy_keys_headers_and_organization_are_redacted(tmp_path):
    dspy = pytest.importorskip("dspy")
    from opto_adapters.dspy import ProgramTarget

    key, header, org = "zq-paper-dspy-credential-4471", "zq-paper-team-token-9902", "zq-paper-org-5510x"
    with ScriptedServer() as server:
        server.fail_with = (401, f"Incorrect API key provided: {key}; header {header}; organization {org}")
        lm = dspy.LM(
            "openai/scripted",
            api_base=server.base_url,
            api_key=key,
            cache=False,
            num_retries=0,
            extra_headers={"X-Team-Token": header},
            organization=org,
        )
        with dspy.context(lm=lm):
            target = ProgramTarget(dspy.Predict("question -> answer"))
        llm = ScriptedLLM([ANSWER], repeat_last=True)
        optimize(
            target,
            [dspy.Example(question="q").with_inputs("question")],
            lambda e, o: (0.0, str(o)),
            OptoPrime(target.parameters(), llm),
            max_steps=1,
            run_dir=str(tmp_path / "run"),
        )
    assert "Incorrect API key" in (tmp_path / "run" / "history.jsonl").read_text()
    assert leaks(tmp_path / "run", llm, [key, header, org]) == []


# ----- the optimizer's own client: URL credentials in errors and in the SDK's debug log -------------------------
def test_a_url_password_echoed_in_a_401_body_is_never_shown():
    from opto_core.llm.client import LLMError, OpenAIChat

    password = "zq-paper-url-password-6061"
    with ScriptedServer() as server:
        server.fail_with = (401, f"bad credentials for user bob with password {password}")
        url = server.base_url.replace("http://", f"http://bob:{password}@")
        with pytest.raises(LLMError) as info:
            OpenAIChat(url, "zq-paper-optimizer-key-3113", "scripted", max_retries=0).chat(
                [{"role": "user", "content": "hi"}]
            )
    assert "bad credentials" in str(info.value) and password not in str(info.value)
    assert password not in repr(info.value.args)


_DEBUG_SCRIPT = """
import sys
from opto_core.llm.client import OpenAIChat
from opto_core.testing import ScriptedServer
with ScriptedServer(["hello"]) as server:
    url = server.base_url.replace("http://", "http://bob:" + sys.argv[1] + "@")
    print(OpenAIChat(url, sys.argv[2], "scripted", max_retries=0).chat([{"role": "user", "content": "hi"}]).text)
"""


def test_the_openai_sdks_own_debug_log_shows_no_credential(tmp_path):
    password, key = "zq-paper-url-password-8080", "zq-paper-optimizer-key-2323"
    script = tmp_path / "debug.py"
    script.write_text(_DEBUG_SCRIPT)
    env = {**os.environ, "OPENAI_LOG": "debug", "PYTHONPATH": str(Path(__file__).parent.parent)}
    done = subprocess.run(
        [sys.executable, str(script), password, key], capture_output=True, text=True, timeout=120, env=env
    )
    assert done.returncode == 0, done.stderr
    assert "hello" in done.stdout and "HTTP Request" in done.stderr + done.stdout  # the debug lines are there
    assert password not in done.stderr + done.stdout and key not in done.stderr + done.stdout


def test_discover_reads_attributes_dicts_and_secret_strings_without_running_code():
    class Client:
        def __init__(self) -> None:
            self.api_key = "zq-paper-client-key-1001"
            self.default_headers = {"Authorization": "Bearer zq-paper-bearer-2002", "User-Agent": "paper/1.0"}
            self.settings = {"organization": "zq-paper-org-3003", "timeout": 30}

        @property
        def exploding(self):  # discovery must not run it
            raise AssertionError("a property ran")

    redactor = Redactor(environ={})
    assert redactor.discover({"clients": [Client()]}) >= 3
    text = redactor.redact("zq-paper-client-key-1001 Bearer zq-paper-bearer-2002 zq-paper-org-3003 paper/1.0")
    assert text == "*** *** *** paper/1.0"
    assert REDACTOR is not redactor and redact("plain text") == "plain text"


def test_an_autogen_model_clients_key_and_headers_are_found():
    pytest.importorskip("autogen_ext")
    from autogen_agentchat.agents import AssistantAgent
    from autogen_ext.models.openai import OpenAIChatCompletionClient

    from opto_adapters.autogen import as_target

    client = OpenAIChatCompletionClient(
        model="gpt-4o-mini",
        api_key="zq-paper-autogen-key-5150",
        base_url="http://127.0.0.1:9/v1",
        default_headers={"X-Org-Token": "zq-paper-autogen-header-6161"},
    )
    redactor = Redactor(environ={})
    redactor.discover(as_target(AssistantAgent("helper", client)))
    assert redactor.redact("zq-paper-autogen-key-5150 / zq-paper-autogen-header-6161") == "*** / ***"
