"""The `opto` command end to end, with the model scripted (only the model is fake)."""

import json

import pytest
from typer.testing import CliRunner

from opto_core.app import cli
from opto_core.testing import ScriptedLLM

FIX = (
    'def parse_price(line: str) -> float:\n    """Read the amount in dollars from a line such as \'Total: $12.50\'."""\n'
    '    return float(line.split("$")[1])\n'
)


@pytest.fixture
def scripted(monkeypatch):
    llm = ScriptedLLM(
        [
            json.dumps(
                {
                    "reasoning": "parse_price drops the cents [sic]; the rate should be 0.1",
                    "suggestion": {"invoice.parse_price.code": FIX, "invoice.discount_rate": 0.1},
                }
            )
        ],
        repeat_last=True,
    )
    llm.base_url = "http://127.0.0.1:9/v1"
    monkeypatch.setattr(cli, "_client", lambda *args, **kwargs: llm)
    return llm


def test_demo_runs_end_to_end_and_writes_a_report(tmp_path, scripted):
    run_dir = tmp_path / "demo"
    result = CliRunner().invoke(cli.app, ["demo", "--workflow", "python", "--steps", "2", "--run-dir", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert "parse_price#0" in result.output and "step 1" in result.output and "kept" in result.output
    assert "Coverage over 1 run(s): feedback reaches 2 of 2 trainable parameter(s)" in result.output
    assert "[sic]" in result.output  # model text is shown literally, not read as markup
    checkpoint = json.loads((run_dir / "checkpoint.json").read_text())
    assert checkpoint["best"]["invoice.discount_rate"] == 0.1 and checkpoint["best_score"] == 1.0
    assert (run_dir / "report.html").exists() and json.loads((run_dir / "config.json").read_text())["recipe"]

    again = CliRunner().invoke(cli.app, ["resume", str(run_dir), "--steps", "3"])
    assert again.exit_code == 0, again.output
    assert len((run_dir / "history.jsonl").read_text().splitlines()) == 4


def test_report_graph_and_errors(tmp_path, scripted):
    run_dir = tmp_path / "demo"
    CliRunner().invoke(cli.app, ["demo", "--workflow", "python", "--steps", "1", "--run-dir", str(run_dir)])
    out = tmp_path / "r.html"
    assert CliRunner().invoke(cli.app, ["report", str(run_dir), "--out", str(out)]).exit_code == 0 and out.exists()
    graph = run_dir / "graphs" / "step-1.json"
    drawn = CliRunner().invoke(cli.app, ["graph", str(graph), "--out-dir", str(tmp_path / "g")])
    assert drawn.exit_code == 0 and {p.suffix for p in (tmp_path / "g").iterdir()} >= {".html", ".dot"}
    empty = tmp_path / "empty"
    empty.mkdir()
    assert CliRunner().invoke(cli.app, ["report", str(empty)]).exit_code == 2
    assert CliRunner().invoke(cli.app, ["resume", str(empty)]).exit_code == 2
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "opto-graph/9", "nodes": []}')
    result = CliRunner().invoke(cli.app, ["graph", str(bad)])
    assert result.exit_code == 2 and "unsupported graph format" in result.output


def test_demo_help_lists_the_public_options():
    result = CliRunner().invoke(cli.app, ["demo", "--help"])
    for option in ("--base-url", "--model", "--steps", "--run-dir"):
        assert option in result.output


def test_demo_tunes_numbers_by_search_and_says_so(tmp_path, monkeypatch):
    # a model that never proposes a number (as the embedded one): the search part still moves the rate
    llm = ScriptedLLM(
        [json.dumps({"reasoning": "fix the parser", "suggestion": {"invoice.parse_price.code": FIX}})], repeat_last=True
    )
    llm.base_url = "http://127.0.0.1:9/v1"
    monkeypatch.setattr(cli, "_client", lambda *args, **kwargs: llm)
    run_dir = tmp_path / "demo"
    result = CliRunner().invoke(cli.app, ["demo", "--workflow", "python", "--steps", "3", "--run-dir", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert "optimizer: Hybrid" in result.output
    assert "invoice.discount_rate: 0.5 -> " in result.output and "(by the search part)" in result.output
    assert "invoice.parse_price.code: new code, 3 lines (by the LLM)" in result.output
    history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    rates = {h["proposal"]["accepted"].get("invoice.discount_rate") for h in history[1:]} - {None}
    assert rates and rates != {0.5}


def test_local_model_must_be_a_file(tmp_path):
    result = CliRunner().invoke(
        cli.app,
        [
            "demo",
            "--workflow",
            "python",
            "--local-model",
            str(tmp_path / "nope.gguf"),
            "--run-dir",
            str(tmp_path / "run"),
        ],
    )
    assert result.exit_code == 2 and "is not a file" in " ".join(result.output.split())


def test_a_second_resume_of_a_locked_run_exits_with_a_clear_message(tmp_path, scripted):
    from opto_core.engine.rundir import RunDir

    run_dir = tmp_path / "demo"
    assert (
        CliRunner()
        .invoke(cli.app, ["demo", "--workflow", "python", "--steps", "1", "--run-dir", str(run_dir)])
        .exit_code
        == 0
    )
    history = (run_dir / "history.jsonl").read_text()
    holder = RunDir(run_dir)
    holder.open(resume=True)  # another `opto resume` (or optimize) is running on this directory
    try:
        second = CliRunner().invoke(cli.app, ["resume", str(run_dir), "--steps", "3"])
    finally:
        holder.close()
    assert second.exit_code == 2 and "lock" in " ".join(second.output.split()).lower()
    assert (run_dir / "history.jsonl").read_text() == history  # the second one wrote nothing
    assert CliRunner().invoke(cli.app, ["resume", str(run_dir), "--steps", "2"]).exit_code == 0
