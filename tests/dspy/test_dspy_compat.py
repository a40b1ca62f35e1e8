"""The DSPy internals the adapter uses (`opto_adapters.dspy._compat`), checked against the installed DSPy:
each test fails when a release changes one of them."""

from __future__ import annotations

import threading
from importlib.metadata import version
from pathlib import Path

import dspy
from packaging.specifiers import SpecifierSet

from opto_adapters.dspy import _compat

ROOT = Path(__file__).resolve().parents[2]


def test_the_installed_dspy_is_in_the_tested_range_and_the_extra_pins_it():
    assert version("dspy") in SpecifierSet(_compat.TESTED_RANGE), f"dspy {version('dspy')}: re-check _compat.py"
    assert f'"dspy{_compat.TESTED_RANGE}"' in (ROOT / "pyproject.toml").read_text()


def test_context_overrides_are_what_dspy_context_set_in_this_thread_only(echo_lm):
    assert "lm" not in _compat.context_overrides()
    seen = {}
    with dspy.context(lm=echo_lm, trace=[]):
        captured = _compat.context_overrides()
        worker = threading.Thread(target=lambda: seen.update(_compat.context_overrides()))
        worker.start()
        worker.join()
    assert captured["lm"] is echo_lm and "lm" not in seen  # a new thread does not inherit it
    with dspy.context(**captured):  # carried into another context, it is the same setting
        assert dspy.settings.lm is echo_lm


def test_input_keys_are_the_named_inputs_even_the_missing_ones():
    example = dspy.Example(question="q", answer="a")
    assert _compat.input_keys(example) is None
    assert _compat.input_keys(example.with_inputs("question")) == ["question"]
    lacking = dspy.Example(answer="a").with_inputs("question")
    assert _compat.input_keys(lacking) == ["question"] and dict(lacking.inputs()) == {}  # public API drops it
