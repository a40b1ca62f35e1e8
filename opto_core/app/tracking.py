"""`MlflowTracker`: an optimization run as an MLflow run (``optimize(..., tracking="mlflow")``, extra ``mlflow``).

What lands in MLflow, read back with MLflow's own client (``mlflow.tracking.MlflowClient``):

- **params**: the run's settings (``settings.max_steps``, ...), the optimizer, the model, and each
  trainable parameter's start value (``start.<name>``, cut to 500 characters; whole in
  ``values/start.json``);
- **metrics per step** (``step`` = the optimization step; 0 is the start): ``score/batch``,
  ``score/check`` (the score the step was judged on), ``score/current``, ``score/best``, ``step/kept``
  (1 or 0), ``optimizer/tokens``, ``optimizer/cost_usd``, ``optimizer/calls`` (the run's totals so
  far), ``optimizer/seconds`` (this step's call), ``runs/evaluations`` and ``runs/errors``;
- **artifacts**: ``steps/step-NNN.json`` (each step's record: values before and after, the proposal
  and who made it, the decision and why), and at the end ``best_values.opto.json`` (for the
  adapters' ``apply_values``), ``summary.txt`` (the result block), ``report.html`` and the best graph
  (``graph/best.json`` with its drawing ``graph/best.html``) when the run has a ``run_dir``;
- **tags**: ``opto.stopped``, ``opto.best_score_on``, ``opto.run_dir``, ``opto.framework``.

Where: the tracking URI MLflow is configured with (``MLFLOW_TRACKING_URI``, ``mlflow.set_tracking_uri``,
or ``tracking_uri=``), else MLflow's own local default (``mlflow.db`` with artifacts under
``./mlruns`` in the working directory); the experiment set with ``mlflow.set_experiment`` /
``MLFLOW_EXPERIMENT_NAME``, or ``experiment=``. Inside an active MLflow run (a DSPy program tracked
with ``mlflow.start_run()``), the optimization is a nested run. The client is ``mlflow-skinny``.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from pathlib import Path
from typing import Any

from opto_core.engine.events import OptimizerCallFinished, RunEvent, RunFinished, RunStarted, StepDecided
from opto_core.kernel.files import dumps
from opto_core.kernel.redact import redact

log = logging.getLogger("opto")

__all__ = ["EXTRA_HINT", "MlflowTracker"]

EXTRA_HINT = "tracking='mlflow' needs the `mlflow` extra: pip install 'opto-adapters[mlflow]'"
PARAM_LIMIT = 500


def import_mlflow() -> Any:
    """The ``mlflow`` module, or an `ImportError` naming the extra."""
    try:
        import mlflow
    except ImportError as exc:
        raise ImportError(EXTRA_HINT) from exc
    return mlflow


class MlflowTracker:
    """An ``on_event`` listener that records the run in MLflow (see the module docstring)."""

    def __init__(
        self, tracking_uri: str | None = None, experiment: str | None = None, run_name: str | None = None
    ) -> None:
        self.mlflow = import_mlflow()
        from mlflow.tracking import MlflowClient

        if tracking_uri is not None:
            self.mlflow.set_tracking_uri(tracking_uri)
        if experiment is not None:
            self.mlflow.set_experiment(experiment)
        self.client = MlflowClient()
        self.run_name = run_name
        self.run_id: str | None = None
        self.run_dir: str | None = None
        self.seconds: dict[int, float] = {}
        self._nested = False

    # ----- events ------------------------------------------------------------------------------------
    def __call__(self, event: RunEvent) -> None:
        if isinstance(event, RunStarted):
            self.start(event)
        elif self.run_id is None:
            return
        elif isinstance(event, OptimizerCallFinished):
            self.seconds[event.step] = event.seconds
        elif isinstance(event, StepDecided):
            self.step(event)
        elif isinstance(event, RunFinished):
            self.finish(event)

    def start(self, event: RunStarted) -> None:
        self.run_dir = event.run_dir
        name = self.run_name or (f"opto {Path(event.run_dir).name}" if event.run_dir else "opto")
        self._nested = self.mlflow.active_run() is not None
        run = self.mlflow.start_run(run_name=name, nested=self._nested)
        self.run_id = run.info.run_id
        tags = {
            "opto.run_dir": str(Path(event.run_dir).resolve()) if event.run_dir else "",
            "opto.resumed_after_step": str(event.step) if event.resumed else "",
        }
        for key, value in tags.items():
            if value:
                self.client.set_tag(self.run_id, key, value)
        self.mlflow.log_params(
            {
                "opto.max_steps": event.max_steps,
                "opto.trainset_size": event.trainset_size,
                "opto.valset_size": event.valset_size,
            }
        )

    def step(self, event: StepDecided) -> None:
        record, step = event.record, event.step
        usage = event.usage
        metrics = {
            "score/batch": record.get("batch_score"),
            "score/check": record.get("eval_score"),
            "score/current": record.get("current_score"),
            "score/best": event.best_score,
            "step/kept": 1.0 if event.kept else 0.0,
            "optimizer/tokens": event.tokens,
            "optimizer/cost_usd": event.cost_usd,
            "optimizer/calls": usage.get("calls"),
            "optimizer/seconds": self.seconds.get(step),
            "runs/evaluations": record.get("evaluations_total"),
            "runs/errors": record.get("errors_total"),
        }
        self._metrics(metrics, step)
        self.mlflow.log_dict(_jsonable(record), f"steps/step-{step:03d}.json")

    def finish(self, event: RunFinished) -> None:
        result = event.result
        try:
            self._finish(result)
        finally:
            status = "FAILED" if getattr(result, "failed", False) else "FINISHED"
            self.mlflow.end_run(status=status)
            self.run_id = None

    def _finish(self, result: Any) -> None:
        history = list(getattr(result, "history", []) or [])
        if history and history[0].get("kind") == "initial":  # the start, as step 0
            initial = history[0]
            self._metrics(
                {
                    "score/current": initial.get("eval_score"),
                    "score/best": initial.get("eval_score"),
                    "runs/evaluations": initial.get("evaluations"),
                },
                0,
            )
            start = initial.get("values") or {}
            self.mlflow.log_params({f"start.{name}": _param(value) for name, value in start.items()})
            self.mlflow.log_dict(_jsonable(start), "values/start.json")
        config = self._config()  # written by the run's start, after this tracker started
        self.mlflow.log_params(
            {
                f"settings.{k}": _param(v)
                for k, v in config.items()
                if k not in ("parameters", "fingerprint", "max_steps") and v is not None and not isinstance(v, dict)
            }
        )
        self._metrics({"final/best_score": result.best_score, "final/start_score": result.initial_score}, None)
        run_id = self.run_id
        assert run_id is not None
        self.client.set_tag(run_id, "opto.stopped", result.stopped_reason)
        if result.best_score_on:
            self.client.set_tag(run_id, "opto.best_score_on", result.best_score_on)
        self.client.set_tag(run_id, "opto.framework", str(result.meta.get("framework", "")))
        self.mlflow.log_text(result.summary() + "\n", "summary.txt")
        with tempfile.TemporaryDirectory(prefix="opto-mlflow-") as scratch:
            values = Path(scratch) / "best_values.opto.json"
            result.save_values(str(values))
            self.mlflow.log_artifact(str(values))
            if not self.run_dir:
                log.warning(
                    "tracking: the run has no run_dir, so its report and graphs are not in MLflow (pass "
                    "run_dir=... to keep them)"
                )
                return
            self._report(Path(scratch))
            self._best_graph(history, result.best_values, Path(scratch))

    def _report(self, scratch: Path) -> None:
        from opto_core.app.report import write_report

        assert self.run_dir is not None
        try:
            path = write_report(self.run_dir, scratch / "report.html")
        except Exception as exc:  # the run's artifacts matter more than its drawing
            log.warning("tracking: could not draw the report (%s: %s)", type(exc).__name__, exc)
            return
        self.mlflow.log_artifact(str(path))

    def _best_graph(self, history: list[dict[str, Any]], best: dict[str, Any], scratch: Path) -> None:
        """The graph of a run made with the best values (the first step traced with them), else the latest."""
        from opto_core.app.report import write_graph_files

        assert self.run_dir is not None
        chosen = None
        for record in history:
            values = record.get("values_before", record.get("values"))
            if record.get("graph") and values == best:
                chosen = record["graph"]
                break
        if chosen is None:
            chosen = next((r["graph"] for r in reversed(history) if r.get("graph")), None)
        if chosen is None:
            return
        source = Path(self.run_dir) / chosen
        copy = scratch / "best.json"
        copy.write_text(source.read_text(encoding="utf-8"), encoding="utf-8")
        self.mlflow.log_artifact(str(copy), "graph")
        try:
            for drawn in write_graph_files(copy, scratch / "drawn"):
                self.mlflow.log_artifact(str(drawn), "graph")
        except Exception as exc:
            log.warning("tracking: could not draw the best graph (%s: %s)", type(exc).__name__, exc)

    # ----- helpers -----------------------------------------------------------------------------------
    def _metrics(self, metrics: dict[str, Any], step: int | None) -> None:
        clean = {
            name: float(value)
            for name, value in metrics.items()
            if isinstance(value, (int, float)) and math.isfinite(value)
        }
        if clean:
            self.mlflow.log_metrics(clean, step=step if step is not None else 0)

    def _config(self) -> dict[str, Any]:
        if not self.run_dir:
            return {}
        try:
            return json.loads((Path(self.run_dir) / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}


def _param(value: Any) -> str:
    text = redact(value if isinstance(value, str) else json.dumps(value, default=repr))
    return text if len(text) <= PARAM_LIMIT else text[: PARAM_LIMIT - 3] + "..."


def _jsonable(value: Any) -> Any:
    """JSON data as MLflow stores it, secrets redacted like every file of ours (`opto_core.kernel.files.dumps`):
    a step record holds what the workflow echoed, a key in an SDK's 401 message included."""
    return json.loads(dumps(value))
