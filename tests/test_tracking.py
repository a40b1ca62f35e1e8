"""Tracking in MLflow: every step's metrics, the decision and the artifacts, read back with MLflow's own client.

MLflow is real (the `mlflow` extra, mlflow-skinny): a local file store in a temporary directory, and
MLflow's own default local store for the `opto demo --mlflow` case. Only the optimizer's model is fake.
"""

from __future__ import annotations

import json
import os
import sys

import pytest
from executor_scenarios import TRAIN, VAL, scale_target
from executor_scenarios import scale_feedback as feedback

from opto_core.engine.loop import optimize
from opto_core.optimizers.optoprime import OptoPrime
from opto_core.testing import ScriptedLLM

mlflow = pytest.importorskip("mlflow")
from mlflow.tracking import MlflowClient  # noqa: E402


def say(k):
    return json.dumps({"reasoning": f"k = {k}", "suggestion": {"k": k}})


@pytest.fixture
def file_store(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps the file store in maintenance mode
    uri = (tmp_path / "mlruns").as_uri()
    mlflow.set_tracking_uri(uri)
    yield uri
    mlflow.set_tracking_uri(None)  # back to MLflow's own resolution for the next test


def _only_run(client):
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert len(runs) == 1
    return runs[0]


def test_an_mlflow_run_holds_every_step_and_the_artifacts(tmp_path, file_store):
    target = scale_target()
    llm = ScriptedLLM([say(2.0), say(5.0), say(3.0)], cost_per_call=0.001)
    result = optimize(
        target,
        TRAIN,
        feedback,
        OptoPrime(target.parameters(), llm),
        valset=VAL,
        max_steps=3,
        batch_size=2,
        run_dir=str(tmp_path / "run"),
        tracking="mlflow",
    )
    client = MlflowClient()
    run = _only_run(client)
    assert run.info.status == "FINISHED"
    best = [m.value for m in sorted(client.get_metric_history(run.info.run_id, "score/best"), key=lambda m: m.step)]
    kept = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "step/kept"))
    assert kept == [(1, 1.0), (2, 0.0), (3, 1.0)]  # 2 closer, 5 worse (rolled back), 3 exact
    assert best[0] == result.initial_score == -40.0 and best[-1] == result.best_score == 0.0
    tokens = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "optimizer/tokens"))
    assert [s for s, _ in tokens] == [1, 2, 3] and tokens[-1][1] == result.usage["prompt_tokens"] + result.usage[
        "completion_tokens"
    ]
    cost = client.get_metric_history(run.info.run_id, "optimizer/cost_usd")
    assert max(m.value for m in cost) == pytest.approx(0.003)
    assert run.data.params["start.k"] == "1.0" and run.data.params["settings.batch_size"] == "2"
    assert (
        run.data.tags["opto.stopped"] == "max_steps" and run.data.tags["opto.best_score_on"] == "on the validation set"
    )
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"best_values.opto.json", "report.html", "summary.txt", "steps", "graph", "values"} <= names
    steps = {a.path for a in client.list_artifacts(run.info.run_id, "steps")}
    assert steps == {"steps/step-001.json", "steps/step-002.json", "steps/step-003.json"}
    local = client.download_artifacts(run.info.run_id, "steps/step-002.json", str(tmp_path / "dl"))
    step = json.loads(open(local).read())
    assert step["decision"].startswith("rolled back") and step["proposal"]["accepted"] == {"k": 5.0}
    values = json.loads(
        open(client.download_artifacts(run.info.run_id, "best_values.opto.json", str(tmp_path / "dl"))).read()
    )
    assert values["values"] == {"k": 3.0}
    graph = {a.path for a in client.list_artifacts(run.info.run_id, "graph")}
    assert {"graph/best.json", "graph/best.html"} <= graph


def test_a_dspy_compile_passes_tracking_through(tmp_path, file_store):
    dspy = pytest.importorskip("dspy")
    from opto_adapters.dspy import OptoTeleprompter
    from opto_adapters.dspy.testing import rule_lm

    trainset = [dspy.Example(question=q, answer=q.upper()).with_inputs("question") for q in ("ab", "cd")]
    lm = rule_lm(
        lambda call: {
            "answer": call.inputs["question"].upper() if "capitals" in call.instructions else call.inputs["question"]
        }
    )
    llm = ScriptedLLM(
        [json.dumps({"reasoning": "shout", "suggestion": {"predict.instructions": "Answer in capitals."}})]
    )
    with dspy.context(lm=lm):
        OptoTeleprompter(
            metric=lambda g, p: g.answer == p.answer,
            llm=llm,
            max_steps=1,
            num_threads=1,
            run_dir=str(tmp_path / "run"),
            tracking="mlflow",
        ).compile(dspy.Predict("question -> answer"), trainset=trainset)
    client = MlflowClient()
    run = _only_run(client)
    assert [m.value for m in client.get_metric_history(run.info.run_id, "step/kept")] == [1.0]
    assert run.data.metrics["final/best_score"] == 1.0


def test_inside_an_active_mlflow_run_the_optimization_is_a_nested_run(tmp_path, file_store):
    target = scale_target()
    with mlflow.start_run(run_name="my experiment") as parent:
        optimize(
            target,
            TRAIN,
            feedback,
            OptoPrime(target.parameters(), ScriptedLLM([say(3.0)])),
            max_steps=1,
            batch_size=2,
            tracking="mlflow",
        )
        assert mlflow.active_run().info.run_id == parent.info.run_id  # the user's run is active again
    client = MlflowClient()
    runs = client.search_runs([parent.info.experiment_id])
    child = next(r for r in runs if r.info.run_id != parent.info.run_id)
    assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id


def test_without_the_extra_the_error_names_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if mlflow were not installed
    target = scale_target()
    with pytest.raises(ImportError, match=r"pip install 'opto-adapters\[mlflow\]'"):
        optimize(target, TRAIN, feedback, OptoPrime(target.parameters(), ScriptedLLM([])), tracking="mlflow")
    with pytest.raises(ValueError, match="unknown tracking 'wandb'; known: mlflow"):
        optimize(target, TRAIN, feedback, OptoPrime(target.parameters(), ScriptedLLM([])), tracking="wandb")


def test_opto_demo_mlflow_writes_to_mlflow_s_own_local_store(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from opto_core.app import cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    mlflow.set_tracking_uri(None)
    llm = ScriptedLLM([json.dumps({"reasoning": "none", "suggestion": {}})], repeat_last=True)
    llm.base_url = "http://127.0.0.1:9/v1"
    monkeypatch.setattr(cli, "_client", lambda *args, **kwargs: llm)
    result = CliRunner().invoke(
        cli.app, ["demo", "--workflow", "python", "--steps", "1", "--run-dir", "run", "--mlflow"]
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "mlruns").is_dir()  # MLflow's local default: a database here, artifacts under ./mlruns
    client = MlflowClient(tracking_uri=mlflow.get_tracking_uri())
    run = _only_run(client)
    assert client.get_metric_history(run.info.run_id, "step/kept") and "report.html" in {
        a.path for a in client.list_artifacts(run.info.run_id)
    }
    assert os.path.isfile(tmp_path / "run" / "report.html")
