"""The ``opto`` command: ``demo``, ``resume``, ``report``, ``graph``, ``gateway`` and ``import``.

Exit codes (`opto_core.app.exits`, and the README): 0 the run ended as planned, 1 it stopped on an
error of the run, 2 a usage error, 3 a damaged run directory, 4 a run directory that cannot be
written, 5 a feedback function that failed, 130 interrupted. A user error prints one plain message,
never a traceback.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.text import Text

from opto_core.app.progress import configure_logging, run_display

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Optimize AI workflows from their execution traces (OPTO / OptoPrime).",
)
console = Console()


def _client(
    base_url: str | None, model: str | None, context_window: int | None = None, local_model: str | None = None
) -> Any:
    """The optimizer's LLM client. ``local_model`` serves the user's own GGUF file through the embedded server."""
    from opto_core.llm.client import OpenAIChat

    if local_model is not None:
        path = Path(local_model).expanduser()
        if not path.is_file():
            console.print(
                f"[red]--local-model: {escape(str(path))} is not a file (give the path of a .gguf model)[/red]"
            )
            raise typer.Exit(2)
        if base_url:
            console.print(
                "[red]--local-model serves a model on this machine; it cannot be combined with --base-url[/red]"
            )
            raise typer.Exit(2)
        os.environ["OPTO_LOCAL_MODEL"] = str(path.resolve())  # read by the embedded server when it starts
    return OpenAIChat(base_url=base_url, model=model, context_window=context_window)


#: The render budget against the embedded model (the optimizer's default is 8,000): the variables,
#: constraints and feedback always stay whole, so this shortens only the context around them. With the
#: validation retry off, a demo step is one call of about 1,500 tokens, about 30 s on an idle 2-core machine.
EMBEDDED_TOKEN_BUDGET = 1200


def _optimizer_for(target: Any, llm: Any, answer_tokens: int | None = None, name: str | None = None) -> Any:
    """OptoPrime, or `Hybrid` when the workflow has bounded numeric parameters that a search can tune."""
    from opto_core.optimizers.opro import OPRO
    from opto_core.optimizers.optoprime import OptoPrime, OptoPrimeNoTrace

    kwargs: dict[str, Any] = {"max_answer_tokens": answer_tokens} if answer_tokens else {}
    if getattr(llm, "local", False):  # the embedded model reads ~67 tokens/s on 2 cores: short prompts, and no
        kwargs["token_budget"] = EMBEDDED_TOKEN_BUDGET  # second call to re-ask an answer it rarely fixes
        kwargs["retry_invalid"] = False
    classes: dict[str, Any] = {"OPRO": OPRO, "OptoPrimeNoTrace": OptoPrimeNoTrace, "OptoPrime": OptoPrime}
    if name is None or name == "Hybrid":
        numeric = [
            p
            for p in target.parameters()
            if p.trainable
            and (p.kind == "choice" or (p.kind in ("float", "int") and p.lower is not None and p.upper is not None))
        ]
        if numeric or name == "Hybrid":
            try:
                from opto_core.optimizers.hybrid import Hybrid

                return Hybrid(target.parameters(), llm, **kwargs)
            except ImportError as exc:  # optuna (the `search` extra) is missing: the LLM proposes numbers too
                console.print(f"[yellow]{escape(str(exc))}; using OptoPrime for every parameter[/yellow]")
    return classes.get(name or "OptoPrime", OptoPrime)(target.parameters(), llm, **kwargs)


def _show_graph(graph: Any, limit: int = 24) -> None:
    """One line per node (what it is, what fed it, its value), cut to the terminal's width."""
    console.print(f"trace of one run ({len(graph)} nodes; the report draws all of it):")
    width = min(28, max(len(node.id) for node in graph.nodes[:limit])) if len(graph) else 0
    for node in graph.nodes[:limit]:
        value = node.value if isinstance(node.value, str) else json.dumps(node.value, default=repr)
        parents = ", ".join(e.id for e in node.edges)
        line = (
            f"  {node.id:<{width}}  {node.kind:<9} "
            + (f"<- {parents} " if parents else "")
            + "= "
            + " ".join(value.split())
        )
        console.print(Text(line), no_wrap=True, overflow="ellipsis", crop=True)
    if len(graph) > limit:
        console.print(f"  ... {len(graph) - limit} more nodes")


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.3f}"


def _shown(text: Any) -> str:
    """Text for the terminal: secrets redacted, lone surrogates replaced, rich markup escaped."""
    from opto_core.kernel.bounds import without_surrogates
    from opto_core.kernel.redact import redact

    return escape(without_surrogates(redact(str(text))))


#: Stop reasons that mean the run ended on an error (the loop's own list, when it has one, is used too).
ERROR_STOPS = {"optimizer_error", "max_errors", "invalid_values", "error", "feedback_error"}


def _failed(result: Any) -> bool:
    """Whether a run stopped on an error: its ``failed`` flag, an error stop reason, or an error text."""
    from opto_core.engine import loop

    reasons = ERROR_STOPS | set(getattr(loop, "ERROR_STOPS", ()))
    return bool(getattr(result, "failed", False) or result.stopped_reason in reasons or result.error)


def _finish(result: Any, run_dir: str) -> None:
    """Print the outcome, write the report, and exit 1 when the run stopped on an error."""
    console.rule("result")
    summary = result.summary()  # its "stopped" line says the error, if any: printed once
    console.print(_shown(summary), highlight=False, soft_wrap=True)
    console.print(
        f"optimizer LLM: {result.usage['calls']} calls, "
        f"{result.usage['prompt_tokens'] + result.usage['completion_tokens']:,} tokens, "
        f"${result.usage['cost_usd']:.4f}",
        highlight=False,
    )
    try:
        from opto_core.app.report import write_report

        path = write_report(run_dir)
        console.print(f"report: {path}")
    except Exception as exc:  # the run is saved whatever happens to the report
        console.print(f"[red]could not write the report: {exc}[/red]")
    console.print(f"run directory: {run_dir} (resume with: opto resume {run_dir})")
    if _failed(result):
        why = result.error if result.error and result.error not in summary else ""
        console.print(
            f"[red]failed: the run stopped on {_shown(result.stopped_reason)}"
            + (f": {_shown(why)}" if why else " (the reason is above)")
            + "[/red]"
        )
        raise typer.Exit(1)


def _run(call: Any) -> Any:
    """Run ``call``: a user error (a damaged, locked, foreign or unwritable run directory, a feedback
    function that failed, a bad setting) prints one plain message and exits with its code
    (`opto_core.app.exits`), never a traceback."""
    from opto_core.app.exits import exit_code

    try:
        return call()
    except Exception as exc:
        code = exit_code(exc)
        if code is None:
            raise
        console.print(f"[red]{_shown(exc)}[/red]")
        raise typer.Exit(code) from None


ISOLATION_HELP = (
    "where the workflow runs: auto (a worker process when the LLM writes code, else here) | none | "
    "process (killable worker processes) | sandbox (process plus OS confinement; see docs/security.md)"
)


def _worker_factory(isolation: Any, recipe: str) -> dict[str, Any]:
    """Workers started as fresh interpreters build the demo's workflow from its recipe: always in the sandbox,
    and for worker processes when this process already runs other threads (AutoGen's event loop): a lock one
    of them holds would stay locked in a forked worker."""
    import threading

    if isolation != "sandbox" and (isolation == "none" or threading.active_count() == 1):
        return {}
    import functools

    from opto_core.app.demo import recipe_target

    return {"target_factory": functools.partial(recipe_target, recipe)}


def _isolation_kwargs(isolation: str, eval_timeout: float | None) -> dict[str, Any]:
    """``isolation=`` and ``eval_timeout=`` for `optimize`; a bad value is a usage error (exit 2)."""
    from opto_core.engine.isolation import check_isolation

    try:
        check_isolation(isolation)
        if eval_timeout is not None and not eval_timeout > 0:
            raise ValueError(f"--eval-timeout must be a positive number of seconds, got {eval_timeout}")
    except ValueError as exc:
        console.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(2) from None
    return {"isolation": isolation, **({"eval_timeout": eval_timeout} if eval_timeout is not None else {})}


def _approver(approve: bool) -> Any:
    if not approve:
        return None
    from opto_core.engine.approval import terminal_approver

    return terminal_approver(console)


def _approval_kwargs(approve: bool) -> dict[str, Any]:
    """``approve=`` for `optimize` (only when asked, so a loop without it still runs)."""
    approver = _approver(approve)
    return {"approve": approver} if approver is not None else {}


@app.command()
def demo(
    base_url: str | None = typer.Option(
        None, help="OpenAI-compatible endpoint (default: OPENAI_BASE_URL, else the embedded local model)"
    ),
    model: str | None = typer.Option(None, help="model name (default: OPTO_MODEL or the server's)"),
    steps: int = typer.Option(2, help="optimization steps"),
    run_dir: str = typer.Option("runs/demo", help="where checkpoints, history and the report go"),
    workflow: str = typer.Option("auto", help="auto | python | langchain | dspy | autogen"),
    batch_size: int = typer.Option(2, help="examples per step"),
    answer_tokens: int | None = typer.Option(
        None,
        help="most tokens the optimizer may answer with (default: "
        "sized per step from its parameters, see docs/optimizing.md)",
    ),
    fresh: bool = typer.Option(
        True,
        help="start over if the run directory holds an earlier run (only a "
        "directory holding an opto run is ever deleted)",
    ),
    approve: bool = typer.Option(False, "--approve", help="ask in the terminal before each proposal is applied"),
    verbose: bool = typer.Option(False, "-v", "--verbose", help="show INFO logs (ours and the frameworks')"),
    mlflow: bool = typer.Option(
        False,
        "--mlflow",
        help="record the run in MLflow (extra `mlflow`; MLFLOW_TRACKING_URI or a local store in this directory)",
    ),
    context_window: int | None = typer.Option(
        None,
        help="the model's context window in tokens (default: "
        "what the server reports, OPTO_CONTEXT_WINDOW, or 4096 for the "
        "embedded server); prompts are budgeted to fit it",
    ),
    local_model: str | None = typer.Option(
        None,
        help="serve this GGUF file through the embedded server "
        "(default: OPTO_LOCAL_MODEL, else the packaged SmolLM2-135M)",
    ),
    isolation: str = typer.Option("auto", help=ISOLATION_HELP),
    eval_timeout: float | None = typer.Option(
        None,
        help="seconds one run of the workflow may take (a longer run fails; isolated runs are killed, default 600)",
    ),
) -> None:
    """Optimize a small example workflow end to end and write its report.

    When the workflow has numeric parameters, the Hybrid optimizer tunes them by search (Optuna) and
    the LLM proposes text and code; each change says which part proposed it.
    """
    from opto_core.app.demo import choose_demo, load_recipe, recipe_of
    from opto_core.engine.loop import optimize
    from opto_core.engine.rundir import RunDir, RunDirError

    configure_logging(console, verbose)
    try:
        name = choose_demo(workflow)
    except ValueError as exc:
        console.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(2) from None
    recipe = recipe_of(name)
    try:
        if fresh:
            RunDir.remove(run_dir)  # refuses anything that is not a run of ours
        elif Path(run_dir).exists() and any(Path(run_dir).iterdir()) and not RunDir.is_run(run_dir):
            raise RunDirError(f"{run_dir} exists and holds no opto run; choose another --run-dir")
    except RunDirError as exc:
        console.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(2) from None
    target, trainset, feedback_fn, valset = load_recipe(recipe)
    llm = _client(base_url, model, context_window, local_model)
    where = llm.base_url or "the embedded local model (started on first use)"
    console.print(
        f"[bold]opto demo[/bold]: the {name} workflow; optimizer model "
        f"{escape(llm.model or '(the server default)')} at {escape(where)}"
    )
    output, graph = target.run(trainset[0])
    console.print(
        Text(" ".join(f"first example: {trainset[0]!r} -> {output!r}".split())),
        no_wrap=True,
        overflow="ellipsis",
        crop=True,
    )
    _show_graph(graph)
    from opto_core.engine.coverage import Coverage

    console.print(escape(str(Coverage.of_graphs(target.parameters(), [graph]))))
    optimizer = _optimizer_for(target, llm, answer_tokens)
    console.print(
        f"optimizer: {type(optimizer).__name__}"
        + (" (the LLM for text and code, a search for numbers)" if type(optimizer).__name__ == "Hybrid" else "")
    )
    result = _run(
        lambda: optimize(
            target,
            trainset,
            feedback_fn,
            optimizer,
            valset,
            max_steps=steps,
            batch_size=batch_size,
            run_dir=run_dir,
            on_event=run_display(console),
            recipe=recipe,
            tracking="mlflow" if mlflow else None,
            **_isolation_kwargs(isolation, eval_timeout),
            **_worker_factory(isolation, recipe),
            **_approval_kwargs(approve),
        )
    )
    _finish(result, run_dir)


@app.command()
def resume(
    run_dir: str = typer.Argument(..., help="a run directory written by `opto demo` or by optimize(recipe=...)"),
    steps: int | None = typer.Option(None, help="total steps (default: the run's own setting)"),
    base_url: str | None = typer.Option(None, help="override the endpoint the run used"),
    model: str | None = typer.Option(None, help="override the model the run used"),
    recipe: str | None = typer.Option(
        None,
        help="module:function that rebuilds the workflow, for a run "
        "not started from a registered demo (its code is imported)",
    ),
    approve: bool = typer.Option(False, "--approve", help="ask in the terminal before each proposal is applied"),
    verbose: bool = typer.Option(False, "-v", "--verbose", help="show INFO logs (ours and the frameworks')"),
    fresh: bool = typer.Option(False, "--fresh", help="start the run over in RUN_DIR (its earlier steps are removed)"),
    mlflow: bool = typer.Option(False, "--mlflow", help="record the run in MLflow (extra `mlflow`)"),
    resume_changed: bool = typer.Option(
        False,
        "--resume-changed",
        help="resume even though the workflow changed "
        "since the run started (saved values that no longer fit are dropped)",
    ),
    context_window: int | None = typer.Option(None, help="the model's context window in tokens"),
    local_model: str | None = typer.Option(None, help="serve this GGUF file through the embedded server"),
    isolation: str | None = typer.Option(None, help=ISOLATION_HELP + " (default: the run's own setting)"),
    eval_timeout: float | None = typer.Option(None, help="seconds one run may take (default: the run's own)"),
) -> None:
    """Continue an interrupted run from its last finished step (with the settings it was started with)."""
    from opto_core.app.demo import is_registered_recipe, load_recipe
    from opto_core.engine.loop import optimize
    from opto_core.engine.rundir import RunDir

    configure_logging(console, verbose)
    store = RunDir(run_dir)
    config = _run(
        lambda: store.read_config() if RunDir.is_run(run_dir) or (Path(run_dir) / "config.json").exists() else {}
    )
    if not config:
        why = (
            (
                " yet: its first start stopped before anything was saved (a full or read-only disk?); start it "
                f"again with opto demo --run-dir {run_dir}"
            )
            if RunDir.is_run(run_dir)
            else " (config.json is missing)"
        )
        console.print(f"[red]{escape(run_dir)} holds no run{escape(why)}[/red]")
        raise typer.Exit(2)
    stored = config.get("recipe")
    if recipe is None:
        if not stored:
            console.print(
                "[red]this run was started from Python code, not from a recipe: resume it by calling "
                "optimize(..., run_dir=...) again with the same arguments, or pass --recipe "
                "module:function[/red]"
            )
            raise typer.Exit(2)
        if not isinstance(stored, str) or not is_registered_recipe(stored):
            # the run directory is data: it must not choose which code this process imports
            console.print(
                f"[red]config.json names the recipe {escape(repr(stored))}, which is not a registered "
                f"demo; nothing was imported. If you trust it, pass it explicitly: "
                f"opto resume {escape(run_dir)} --recipe {escape(str(stored))}[/red]"
            )
            raise typer.Exit(2)
        recipe = stored
    try:
        target, trainset, feedback_fn, valset = load_recipe(recipe)
    except (ValueError, ImportError, AttributeError) as exc:
        console.print(f"[red]cannot build the workflow from {escape(recipe)}: {escape(str(exc))}[/red]")
        raise typer.Exit(2) from None
    llm = _client(base_url or config.get("base_url"), model or config.get("model"), context_window, local_model)
    optimizer = _optimizer_for(target, llm, name=config.get("optimizer") or "OptoPrime")
    overrides = (
        _isolation_kwargs(isolation, eval_timeout)
        if isolation is not None
        else ({"eval_timeout": eval_timeout} if eval_timeout is not None else {})
    )
    overrides.update(_worker_factory(overrides.get("isolation", config.get("isolation")), recipe))
    settings = _run(
        lambda: _settings_of(
            config,
            store,
            run_dir=run_dir,
            recipe=recipe,
            on_event=run_display(console),
            fresh=fresh,
            resume_changed=resume_changed,
            **({"tracking": "mlflow"} if mlflow else {}),
            **({"max_steps": steps} if steps else {}),
            **overrides,
            **_approval_kwargs(approve),
        )
    )
    result = _run(lambda: optimize(target, trainset, feedback_fn, optimizer, valset, settings=settings))
    _finish(result, run_dir)


def _settings_of(config: dict[str, Any], store: Any, **overrides: Any) -> Any:
    """The run's stored settings with the command line's overrides; a bad stored value is a damaged config.json."""
    from opto_core.engine.rundir import CorruptRun
    from opto_core.engine.settings import SettingError, Settings

    try:
        return Settings.from_config(config, **overrides)
    except SettingError as exc:
        if str(exc).split(" ", 1)[0] in overrides:  # a bad command-line value: a usage error
            raise
        raise CorruptRun(store.path / "config.json", f"holds a bad setting: {exc}") from None
    except TypeError as exc:
        raise CorruptRun(store.path / "config.json", f"holds a bad setting: {exc}") from None


@app.command()
def report(
    run_dir: str = typer.Argument(..., help="a run directory"),
    out: str | None = typer.Option(None, help="where to write the HTML (default: RUN_DIR/report.html)"),
) -> None:
    """Write a self-contained HTML report of a run."""
    from opto_core.app.report import ReportError, write_report

    try:
        path = write_report(run_dir, out)
    except (ReportError, OSError) as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    console.print(f"report: {path}")


@app.command()
def graph(
    graph_json: str = typer.Argument(..., help="an OPTO graph JSON file"),
    out_dir: str | None = typer.Option(None, help="where to write GRAPH.html and GRAPH.dot"),
) -> None:
    """Draw one graph as an HTML page (inline SVG, Mermaid source) and a Graphviz DOT file."""
    from opto_core.app.report import ReportError, write_graph_files
    from opto_core.kernel.graph import GraphError

    try:
        paths = write_graph_files(graph_json, out_dir)
    except (ReportError, GraphError, OSError) as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    for path in paths:
        console.print(str(path))


@app.command()
def gateway(
    upstream: str = typer.Option(
        ...,
        help="the real endpoint's base URL, e.g. https://api.openai.com/v1 (its key: "
        "OPTO_UPSTREAM_API_KEY, else the program's own Authorization is passed on)",
    ),
    port: int = typer.Option(8411, help="port to listen on (0: any free port)"),
    host: str = typer.Option("127.0.0.1", help="address to listen on (loopback unless you mean otherwise)"),
    values: str | None = typer.Option(
        None, help="an opto-values/1 file to serve: its prompts and settings rewrite matching requests"
    ),
    record: str | None = typer.Option(None, help="directory to record every run into (one JSONL file per run)"),
    run_gap: float = typer.Option(10.0, help="seconds of silence from a client that end its run"),
) -> None:
    """Serve a recording, rewriting OpenAI-compatible proxy (point programs at it with OPENAI_BASE_URL)."""
    from opto_core.gateway.proxy import Gateway
    from opto_core.kernel.redact import install_log_filter, scrub_url
    from opto_core.kernel.values import ValuesFileError

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per forwarded request is noise here
    install_log_filter()
    try:
        proxy = Gateway(upstream, host=host, port=port, values=values, record_dir=record, run_gap=run_gap)
    except (ValueError, KeyError, ValuesFileError, OSError) as exc:
        console.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(2) from None
    rules = proxy.parameters.parameters()
    console.print(
        f"[bold]opto gateway[/bold] -> {escape(scrub_url(proxy.upstream) or '')}"
        f" (upstream key: {'OPTO_UPSTREAM_API_KEY' if proxy.holds_key else 'the program passes its own'})"
    )
    if rules:
        console.print(
            f"serving {len(rules)} values from {escape(values or '')}: " + ", ".join(escape(p.name) for p in rules)
        )
    if record:
        console.print(f"recording runs into {escape(record)}")
    try:
        proxy.bind()
    except OSError as exc:
        console.print(f"[red]cannot listen on {escape(host)}:{port}: {escape(str(exc))}[/red]")
        raise typer.Exit(2) from None
    console.print(f"programs: OPENAI_BASE_URL={escape(proxy.base_url)}  (Ctrl-C stops)")
    proxy.serve_forever()


@app.command("import")
def import_traces(
    traces: str = typer.Argument(..., help="OpenTelemetry spans as OTLP JSON (or JSON lines of OTLP documents)"),
    out: str | None = typer.Option(None, help="directory to write one OPTO graph JSON per trace into"),
    feedback_attribute: str | None = typer.Option(
        None, help="span attribute holding each trace's score or feedback text (e.g. eval.score)"
    ),
    min_runs: int = typer.Option(2, help="a system prompt must appear in this many traces to become a parameter"),
    optimize: bool = typer.Option(
        False,
        "--optimize",
        help="propose new values from the traces' feedback with one OptoPrime step (nothing is re-run or deployed)",
    ),
    values_out: str = typer.Option("offline.values.json", help="where --optimize writes the values (and a .diff)"),
    base_url: str | None = typer.Option(
        None, help="the optimizer's endpoint (default: OPENAI_BASE_URL, else the embedded local model)"
    ),
    model: str | None = typer.Option(None, help="the optimizer's model"),
) -> None:
    """Read OpenTelemetry traces (GenAI conventions, OpenInference) into OPTO graphs; optionally optimize offline."""
    from opto_core.gateway.offline import optimize_offline
    from opto_core.gateway.otel import load_spans

    try:
        loaded = load_spans(traces, feedback_attribute=feedback_attribute, min_runs=min_runs)
    except (ValueError, TypeError) as exc:
        console.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(2) from None
    calls = sum(g.meta.get("llm_calls", 0) for g in loaded)
    console.print(
        f"{len(loaded)} traces, {calls} LLM calls; {loaded.ignored} spans of other kinds ignored"
        + (f"; skipped: {dict(loaded.skipped)}" if loaded.skipped else "")
    )
    for parameter in loaded.parameters.parameters():
        console.print(f"parameter [bold]{escape(parameter.name)}[/bold] = {escape(str(parameter.value)[:200])}")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        for k, graph_ in enumerate(loaded):
            (Path(out) / f"trace_{k:04d}.json").write_text(graph_.to_json(indent=1), encoding="utf-8")
        console.print(f"graphs: {escape(out)} (draw one with: opto graph {escape(str(Path(out) / 'trace_0000.json'))})")
    if optimize:
        from opto_core.optimizers.optoprime import OptoPrime

        try:
            result = optimize_offline(
                loaded,
                None,
                OptoPrime(loaded.parameters.parameters(), _client(base_url, model)),
                values_path=values_out,
            )
        except ValueError as exc:
            console.print(f"[red]{escape(str(exc))}[/red]")
            raise typer.Exit(1) from None
        console.print(escape(result.diff) or "no value changed")
        console.print(
            f"values: {result.values_path} (serve with: opto gateway --upstream URL --values "
            f"{result.values_path}); diff: {result.diff_path}"
        )


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
