"""The HTML report of real run directories (written by the loop with a scripted model), partial runs
included, and the `opto report` / `opto graph` commands."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from opto_core import Parameter
from opto_core.app.report import ReportError, write_graph_files, write_report
from opto_core.engine.loop import optimize
from opto_core.engine.rundir import RunDir
from opto_core.engine.target import FunctionTarget
from opto_core.kernel.trace import op
from opto_core.optimizers.optoprime import OptoPrime
from opto_core.testing import ScriptedLLM

EVIL = "<script>alert(1)</script>"


@op
def scale(x, k):
    """multiply x by k"""
    return x * k


@op
def say(value, template):
    """put the number after the template text"""
    return f"{template} {value}"


def answer(step_reasoning: str, suggestion: dict) -> str:
    return "```json\n" + json.dumps({"reasoning": step_reasoning, "suggestion": suggestion}) + "\n```"


def feedback(example, output):
    value = float(str(output).rsplit(None, 1)[-1])
    return -abs(value - 3 * example["x"]), f"expected {3 * example['x']}, got {value}"


def build_run(run_dir: Path, replies: list[str], max_steps: int, repeat_last: bool = True):
    k = Parameter("k", "float", 1.0, lower=-10, upper=10)
    template = Parameter("greeting.template", "text", "Hi there\nThe value is", description="text before the number")
    target = FunctionTarget(lambda x: say(scale(x, k), template), [k, template])
    train = [{"x": 1.0}, {"x": 2.0}, {"x": 3.0}]
    llm = ScriptedLLM(replies, repeat_last=repeat_last, cost_per_call=0.001)
    return optimize(
        target,
        train,
        feedback,
        OptoPrime(target.parameters(), llm),
        valset=train,
        max_steps=max_steps,
        batch_size=3,
        run_dir=str(run_dir),
    )


REPLIES = [
    # step 1: better k and a new template holding HTML: kept
    answer(
        "REASON-ONE: k must be 3, <b>not 1</b> & the text needs a greeting",
        {"k": 3, "greeting.template": f"{EVIL}\nHello friend\nThe value is"},
    ),
    # step 2: a worse k: rolled back
    answer("REASON-TWO: try a negative k", {"k": -5}),
    # step 3: out of bounds, then the retry gives up
    answer("REASON-THREE: k should be 99", {"k": 99}),
    "TERMINATE",
]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "full"
    result = build_run(run_dir, REPLIES, max_steps=4)
    assert result.best_values["k"] == 3.0  # the run went as scripted
    return run_dir


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def test_report_of_a_finished_run(finished_run):
    path = write_report(finished_run)
    assert path == finished_run / "report.html"
    page = read(path)
    history = RunDir(finished_run).read_history()
    checkpoint = RunDir(finished_run).read_checkpoint()
    # summary from config, checkpoint and history
    assert "OptoPrime" in page and "scripted" in page
    assert "reached the step limit (max_steps)" in page
    calls = checkpoint["usage"]["calls"]
    assert f'<div class="k">optimizer LLM calls</div><div class="v">{calls}</div>' in page
    assert f"${checkpoint['usage']['cost_usd']:.4f}" in page
    # every step's reasoning, escaped
    assert "REASON-ONE: k must be 3, &lt;b&gt;not 1&lt;/b&gt; &amp; the text needs a greeting" in page
    assert "REASON-TWO" in page
    # the rejected value and its reason
    step3 = next(r for r in history if r["step"] == 3)
    reason = step3["proposal"]["rejected"]["k"]
    assert "k" in step3["proposal"]["rejected"] and reason
    section3 = page[page.index('id="step-3"') : page.index('id="step-4"')]
    assert "Rejected values" in section3 and reason.replace("'", "&#x27;") in section3
    # outcomes: kept, rolled back, no change
    assert re.search(r'id="step-1"><h3>Step 1 <span class="badge kept">kept', page)
    assert re.search(r'id="step-2"><h3>Step 2 <span class="badge bad">rolled back', page)
    assert re.search(r'id="step-4"><h3>Step 4 <span class="badge none">no change', page)
    assert "Kept: the score on the validation set went from -4 to 0." in page
    assert "Rolled back: the score on the validation set dropped from 0 to -16." in page


def test_report_escapes_values_from_the_llm(finished_run):
    page = read(write_report(finished_run))
    assert EVIL not in page
    assert "<script" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_report_diffs_parameters(finished_run):
    page = read(write_report(finished_run))
    params = page[page.index("Parameters: initial and best values") : page.index("<h2>Steps</h2>")]
    assert '<span class="del">-Hi there</span>' in params
    assert '<span class="add">+&lt;script&gt;alert(1)&lt;/script&gt;</span>' in params
    assert '<span class="add">+Hello friend</span>' in params
    assert '<span class="ctx"> The value is</span>' in params
    assert "<code>1.0</code> → <code>3.0</code>" in params


def test_report_plots_one_point_per_step(finished_run):
    page = read(write_report(finished_run))
    history = RunDir(finished_run).read_history()
    plot = page[page.index('<svg xmlns="http://www.w3.org/2000/svg" class="score-plot"') :]
    plot = plot[: plot.index("</svg>")]
    best_steps = [int(s) for s in re.findall(r'<circle class="pt best" data-step="(\d+)"', plot)]
    assert best_steps == [r["step"] for r in history] == list(range(5))
    batch_steps = [int(s) for s in re.findall(r'<circle class="pt batch" data-step="(\d+)"', plot)]
    assert batch_steps == [1, 2, 3, 4]
    assert re.findall(r'<path class="rollback" data-step="(\d+)"', plot) == ["2"]
    # the best line is drawn through every step, and never goes down
    best_line = re.search(r'<polyline class="line best" points="([^"]+)"', plot).group(1).split()
    assert len(best_line) == 5
    ys = [float(point.split(",")[1]) for point in best_line]
    assert ys == sorted(ys, reverse=True)  # SVG y grows downwards


def test_report_draws_the_latest_graph(finished_run):
    page = read(write_report(finished_run))
    graph_part = page[page.index("<h2>Trace graph</h2>") :]
    assert "graphs/step-4.json" in graph_part
    assert 'class="opto-graph-svg"' in graph_part
    assert 'data-id="param:k"' in graph_part and 'data-id="param:greeting.template"' in graph_part
    assert "flowchart TD" in graph_part and "digraph opto {" in graph_part


def test_report_is_self_contained(finished_run):
    page = read(write_report(finished_run))
    assert "<link" not in page and "src=" not in page and "@import" not in page
    assert set(re.findall(r"https?://[^\s\"'<>]+", page)) <= {"http://www.w3.org/2000/svg"}


def test_report_file_is_readable_like_any_file(finished_run):
    import os

    path = write_report(finished_run)
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
    assert not [p for p in finished_run.iterdir() if p.name.endswith(".tmp")]


def test_report_to_another_place(finished_run, tmp_path):
    path = write_report(finished_run, tmp_path / "out" / "r.html")
    assert path == tmp_path / "out" / "r.html" and "REASON-ONE" in read(path)
    assert write_report(finished_run, tmp_path) == tmp_path / "report.html"


# ----- partial runs -----------------------------------------------------------------------------------------------
def test_report_of_a_run_that_crashed_mid_step(tmp_path):
    """The process dies in step 3, leaving the checkpoint of step 2 (still marked running)."""
    run_dir = tmp_path / "crashed"
    build_run(run_dir, REPLIES[:2], max_steps=5, repeat_last=False)  # the script runs out in step 3
    store = RunDir(run_dir)
    checkpoint = store.read_checkpoint()
    assert checkpoint["step"] == 2
    checkpoint.update(done=False, status="running")  # what a killed process leaves behind
    store.write_checkpoint(checkpoint)
    with open(run_dir / "history.jsonl", "a", encoding="utf-8") as handle:
        handle.write('{"step": 3, "kind": "st')  # a line cut by the crash
    page = read(write_report(run_dir))
    assert "not finished" in page and "after step 2" in page
    assert "REASON-ONE" in page and "REASON-TWO" in page
    assert re.findall(r'<circle class="pt best" data-step="(\d+)"', page) == ["0", "1", "2"]


def test_report_without_checkpoint(finished_run, tmp_path):
    run_dir = tmp_path / "no-checkpoint"
    shutil.copytree(finished_run, run_dir)
    (run_dir / "checkpoint.json").unlink()
    (run_dir / "report.html").unlink(missing_ok=True)
    page = read(write_report(run_dir))
    assert "No checkpoint yet" in page
    assert "REASON-ONE" in page
    assert "the best values are taken from history.jsonl" in page
    params = page[page.index("Parameters: initial and best values") : page.index("<h2>Steps</h2>")]
    assert "<code>1.0</code> → <code>3.0</code>" in params  # the best k, from the kept step


def test_report_flags_history_past_the_checkpoint(finished_run, tmp_path):
    run_dir = tmp_path / "ahead"
    shutil.copytree(finished_run, run_dir)
    store = RunDir(run_dir)
    checkpoint = store.read_checkpoint()
    store.write_checkpoint({**checkpoint, "step": 3, "done": False, "status": "running"})
    page = read(write_report(run_dir))
    assert "history.jsonl holds step(s) 4 after the last checkpoint (step 3)" in page
    assert "not in the checkpoint" in page[page.index('id="step-4"') :]


def test_report_with_settings_only(tmp_path):
    RunDir(tmp_path).write_config({"optimizer": "OptoPrime", "model": "m", "max_steps": 3})
    page = read(write_report(tmp_path))
    assert "No step has finished yet" in page and "No scores recorded yet" in page
    assert "No graph was saved" in page


def test_report_of_a_corrupt_checkpoint_uses_history(finished_run, tmp_path):
    run_dir = tmp_path / "corrupt"
    shutil.copytree(finished_run, run_dir)
    (run_dir / "checkpoint.json").write_text("{not json", encoding="utf-8")
    page = read(write_report(run_dir))
    assert "checkpoint.json could not be read" in page and "REASON-TWO" in page


def test_report_errors_clearly_without_a_run(tmp_path):
    with pytest.raises(ReportError, match="holds no optimization run"):
        write_report(tmp_path)
    with pytest.raises(ReportError, match="does not exist"):
        write_report(tmp_path / "missing")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ReportError, match="not a directory"):
        write_report(tmp_path / "file.txt")
    assert list(tmp_path.iterdir()) == [tmp_path / "file.txt"]  # nothing written


# ----- single graph files and the CLI ---------------------------------------------------------------------------
def test_write_graph_files(finished_run, tmp_path):
    html_path, dot_path = write_graph_files(finished_run / "graphs" / "step-1.json", tmp_path)
    assert html_path == tmp_path / "step-1.html" and dot_path == tmp_path / "step-1.dot"
    assert 'data-id="param:k"' in read(html_path)
    assert read(dot_path).startswith("digraph opto {") and '"param:k"' in read(dot_path)
    # next to the JSON by default
    copy = tmp_path / "g" / "trace.json"
    copy.parent.mkdir()
    shutil.copy(finished_run / "graphs" / "step-1.json", copy)
    assert write_graph_files(copy) == [copy.with_suffix(".html"), copy.with_suffix(".dot")]


def test_write_graph_files_rejects_bad_input(tmp_path):
    with pytest.raises(ReportError, match="is not a file"):
        write_graph_files(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "something-else"}')
    with pytest.raises(ReportError, match="is not an OPTO graph"):
        write_graph_files(bad)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.json"]


def test_cli_report_and_graph(finished_run, tmp_path):
    from typer.testing import CliRunner

    from opto_core.app.cli import app

    runner = CliRunner()
    out = tmp_path / "cli.html"
    result = runner.invoke(app, ["report", str(finished_run), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "REASON-ONE" in read(out)
    result = runner.invoke(app, ["graph", str(finished_run / "graphs" / "step-2.json"), "--out-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "step-2.html").exists() and (tmp_path / "step-2.dot").exists()
