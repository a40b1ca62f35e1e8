"""Typed step records and checkpoints: one vocabulary for the loop, the run directory, the report and
the CLI; a run directory written before they were typed (tests/fixtures/run_before_issue21, made by
tests/fixtures/make_run_before_issue21.py with the code of commit 0c81923) still loads, reports and
resumes; unknown keys survive, wrong types are said, newer formats are refused."""

import json
import shutil
from pathlib import Path

import pytest
from scale_scenario import TRAIN, Recording, feedback, make, say

from opto_core import optimize, write_report
from opto_core.engine.records import STEP_FORMAT, Checkpoint, RecordFormatError, StepRecord
from opto_core.engine.rundir import CorruptRun, RunDir
from opto_core.llm.usage import Usage
from opto_core.optimizers.protocol import Proposal
from opto_core.testing import ScriptedLLM

OLD_RUN = Path(__file__).parent / "fixtures" / "run_before_issue21"


# the workflow of tests/fixtures/make_run_before_issue21.py (written against the paths of 0c81923), rebuilt
# from the shared scenario to resume its run
VAL = [{"x": 5.0}, {"x": 6.0}]


@pytest.fixture
def old_run(tmp_path):
    copy = tmp_path / "old-run"
    shutil.copytree(OLD_RUN, copy)
    return copy


def test_every_record_of_an_old_run_reads_typed_with_nothing_unknown(old_run):
    lines = [json.loads(line) for line in (old_run / "history.jsonl").read_text().splitlines()]
    assert all("format" not in line for line in lines)  # written before records had a format
    records = RunDir(old_run).read_history()
    assert [r.step for r in records] == [0, 1, 2, 3] and [r.kind for r in records] == ["initial"] + ["step"] * 3
    for record, line in zip(records, lines):
        assert record.problems == [] and record.extra == {} and record.format == STEP_FORMAT
        assert {k: v for k, v in record.to_dict().items() if k != "format"} == line  # nothing lost or invented
    first, _, rolled_back, _ = records
    assert first.values == {"k": 1.0} and first.eval_score == -11.0 and first.usage == Usage()
    assert isinstance(rolled_back.proposal, Proposal) and rolled_back.proposal.attempts == 2
    assert rolled_back.kept is False and rolled_back.candidate_values == {"k": 0.5}
    assert rolled_back.usage.calls == 3 and rolled_back.usage.prompt_tokens == 2001
    checkpoint = RunDir(old_run).read_checkpoint()
    assert isinstance(checkpoint, Checkpoint) and checkpoint.step == 3 and checkpoint.best == {"k": 2.5}
    assert checkpoint.done and checkpoint.status == "max_steps" and checkpoint.usage.calls == 4
    assert len(checkpoint.optimizer["memory"]) == 3 and checkpoint.extra == {}


def test_an_old_run_reports(old_run):
    page = (write_report(old_run)).read_text(encoding="utf-8")
    assert "finished after step 3" in page and "try k=0.5" in page
    assert "Rolled back: the score on the validation set dropped from -5.5 to -13.75." in page
    assert '<div class="k">optimizer LLM calls</div><div class="v">4</div>' in page


def test_an_old_run_resumes_where_it_stopped(old_run):
    target, k = make(lower=-10, upper=10)
    k.description = "the factor"
    optimizer = Recording([k], ScriptedLLM([say(3.0), say(2.9)]), memory_size=3)
    result = optimize(target, TRAIN, feedback, optimizer, VAL, max_steps=5, batch_size=2, seed=7, run_dir=str(old_run))
    assert result.stopped_reason == "max_steps" and result.steps == 5
    assert result.best_values == {"k": 3.0} and result.best_score == 0.0 and k.value == 3.0
    # the optimizer's memory came back from the old checkpoint, and every old evaluation was replayed
    assert len(optimizer.memory) == 3
    assert optimizer.seen[:4] == [({"k": 1.0}, -11.0), ({"k": 2.0}, -5.5), ({"k": 0.5}, -13.75), ({"k": 2.5}, -2.75)]
    records = RunDir(old_run).read_history()
    assert [r.step for r in records] == [0, 1, 2, 3, 4, 5] and records[4].kept and records[4].usage.calls == 5
    raw = [json.loads(line) for line in (old_run / "history.jsonl").read_text().splitlines()]
    assert all(line["format"] == STEP_FORMAT for line in raw)  # upgraded in place when the run resumed
    assert [r.step for r in result.records] == [0, 1, 2, 3, 4, 5] and result.records[
        1
    ].proposal.reasoning == "try k=2.0"


def _resume(run_dir, max_steps):
    target, k = make(lower=-10, upper=10)
    k.description = "the factor"
    optimizer = Recording([k], ScriptedLLM([say(3.0)], repeat_last=True), memory_size=3)
    return optimize(
        target, TRAIN, feedback, optimizer, VAL, max_steps=max_steps, batch_size=2, seed=7, run_dir=str(run_dir)
    )


def test_an_old_run_resumes_twice_even_when_the_first_resume_stopped_before_its_first_checkpoint(old_run):
    store = RunDir(old_run)
    store.open()  # a resume stopped right after opening: the history is chained, the checkpoint not yet
    store.close()
    assert all("chain" in json.loads(line) for line in (old_run / "history.jsonl").read_text().splitlines())
    assert "history_chain" not in json.loads((old_run / "checkpoint.json").read_text())
    assert _resume(old_run, 4).steps == 4
    result = _resume(old_run, 5)
    assert result.stopped_reason == "max_steps" and [r.step for r in RunDir(old_run).read_history()] == list(range(6))
    assert (
        _resume(old_run, 5).stopped_reason == "already_finished"
    )  # nothing to do, and the run still says why it ended
    assert RunDir(old_run).read_checkpoint().status == "max_steps"


def test_chain_links_stripped_from_a_chained_history_are_detected(old_run):
    _resume(old_run, 4)
    lines = [json.loads(line) for line in (old_run / "history.jsonl").read_text().splitlines()]
    lines[2]["decision"] = "edited"
    (old_run / "history.jsonl").write_text(
        "".join(json.dumps({k: v for k, v in line.items() if k != "chain"}) + "\n" for line in lines)
    )
    with pytest.raises(CorruptRun, match="hold no chain links"):
        _resume(old_run, 5)


def test_unknown_keys_survive_and_wrong_types_are_said(tmp_path):
    store = RunDir(tmp_path / "run")
    store.open(resume=False)
    try:
        record = StepRecord(step=0, kind="initial", values={"k": 1.0}, eval_score=0.5)
        record["plugin_note"] = {"reached": ["k"]}  # a key a newer version (or another plugin) writes
        store.append_history(record)
        store.append_history(
            {
                "step": 1,
                "kind": "step",
                "eval_score": "0.25",
                "kept": "yes",
                "proposal": {"accepted": {"k": 2.0}, "refusal": "none"},
            }
        )
        store.write_checkpoint(Checkpoint(step=1, current={"k": 2.0}, best={"k": 2.0}, extra={"chain": "abc"}))
        store.truncate_history(1)  # what a resume does: every line written again
        initial, step = store.read_history()
        assert initial.extra == {"plugin_note": {"reached": ["k"]}} and initial["plugin_note"] == {"reached": ["k"]}
        assert step.eval_score == 0.25 and step.kept is None  # a number written as text reads; "yes" does not
        assert step.problems == ["kept: str 'yes' is not what this field holds"]
        assert step.extra == {"kept": "yes"} and step.to_dict()["kept"] == "yes"  # rewriting loses nothing
        assert step.proposal.accepted == {"k": 2.0} and step.proposal.extra == {"refusal": "none"}
        assert step.to_dict()["proposal"]["refusal"] == "none"
        assert store.read_checkpoint().extra == {"chain": "abc"}
    finally:
        store.close()


def test_the_dictionary_form_still_reads_and_writes():
    record = StepRecord(step=2, kind="step", proposal=Proposal(accepted={"k": 1}), usage=Usage(calls=2))
    assert record["proposal"]["accepted"] == {"k": 1} and record["usage"]["calls"] == 2
    assert record.get("kept") is None and record.get("kept", False) is False and "kept" not in record
    record.update(kept=True, decision="kept: better")
    record["proposal"] = {"accepted": {"k": 3}}  # a dictionary assigned to a typed field is read into it
    assert record.kept and isinstance(record.proposal, Proposal) and record.proposal.accepted == {"k": 3}
    assert {**record}["decision"] == "kept: better" and record.setdefault("graph", "g.json") == "g.json"


def test_format_1_keeps_the_adapters_refusal_in_the_proposal_and_reads_it_on_the_record():
    old = {
        "step": 3,
        "kind": "step",
        "kept": False,
        "eval_score": None,
        "proposal": {"accepted": {"k": 2.0}, "apply_error": "ValueError: no"},
    }
    record = StepRecord.from_dict(old)
    assert record.apply_error == "ValueError: no" and "apply_error" not in record.proposal.to_dict()
    assert record.to_dict()["format"] == STEP_FORMAT


def test_a_newer_format_is_refused_with_what_to_do(tmp_path):
    with pytest.raises(RecordFormatError, match="written by a newer version"):
        StepRecord.from_dict({"step": 1, "kind": "step", "format": "opto-step/9"})
    store = RunDir(tmp_path / "run")
    store.open(resume=False)
    try:
        store.append_history({"step": 0, "kind": "initial", "format": "opto-step/9"})
        with pytest.raises(CorruptRun, match="opto-step/9"):
            store.read_history()
    finally:
        store.close()
    with pytest.raises(RecordFormatError, match="no valid 'best'"):
        Checkpoint.from_dict({"format": "opto-run/1", "step": 1, "current": {}})
