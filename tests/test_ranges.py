"""Numeric ranges: one rule per kind of setting, each keeping the current value valid."""

import pytest

from opto_core import Parameter
from opto_core.kernel.ranges import (
    MAX_TOKENS_FLOOR,
    MIN_ANSWER_TOKENS,
    count_range,
    fraction_range,
    max_tokens_range,
    output_limit,
    range_for,
    temperature_range,
    top_p_range,
)


def test_output_limits_by_family_snapshot_and_provider_prefix():
    assert output_limit("gpt-4o") == 16_384 and output_limit("gpt-4o-2024-08-06") == 16_384
    assert output_limit("openai/gpt-4o-mini") == 16_384 and output_limit("gpt-4.1-nano") == 32_768
    assert output_limit("gpt-4") == 8_192 and output_limit("gpt-4-turbo-2024-04-09") == 4_096
    assert output_limit("my-finetune") is None and output_limit(None) is None


def test_max_tokens_stays_within_the_model_limit_and_a_few_times_the_current_value():
    # the issue's case: searched in [1, 32768] and set to 31,688, above most models' output limit
    assert (max_tokens_range(8192, "gpt-4o").lower, max_tokens_range(8192, "gpt-4o").upper) == (2048, 16_384)
    unknown = max_tokens_range(256, "my-local-model")
    assert (unknown.lower, unknown.upper) == (MIN_ANSWER_TOKENS, 1024) and "4 times the current 256" in unknown.why
    assert max_tokens_range(None, "gpt-4o-mini").upper == 16_384
    assert max_tokens_range(None).upper == 4096
    assert max_tokens_range(4, "claude-3-haiku").upper == 1024 and max_tokens_range(300, "gpt-4o").upper == 1200


def test_a_max_tokens_that_cuts_every_answer_off_can_grow_to_what_answers_need():
    # opto demo's planted fault: max_tokens=4 truncates every answer; 4 times 4 would keep it useless
    tiny = max_tokens_range(4, "gpt-4o-mini", observed=[4, 4])
    assert tiny.lower <= 4 and tiny.upper == MAX_TOKENS_FLOOR and "room to grow" in tiny.why
    assert max_tokens_range(4, "claude-3-haiku").upper == MAX_TOKENS_FLOOR  # within the model's limit (4,096)
    assert max_tokens_range(4, "tiny-model-with-limit").upper == MAX_TOKENS_FLOOR


def test_max_tokens_is_never_searched_below_what_the_current_answers_need():
    # the case: a demo's max_tokens was set to 17
    needed = max_tokens_range(1000, "gpt-4o", observed=[120, 480, 300])
    assert needed.lower == 600 and needed.upper == 4000 and "480 tokens" in needed.why
    truncated = max_tokens_range(256, "gpt-4o", observed=[256, 256])  # answers cut at the limit
    assert truncated.lower == 256 and 256 in truncated
    odd = max_tokens_range(50_000, "gpt-4o")  # a current value above the table keeps the parameter valid
    assert 50_000 in odd and Parameter("m", "int", 50_000, lower=odd.lower, upper=odd.upper).value == 50_000


def test_sampling_settings_counts_and_fractions():
    assert (temperature_range(0.7).lower, temperature_range(0.7).upper) == (0.0, 2.0)
    assert temperature_range(0.7, "claude-3-5-sonnet").upper == 1.0
    assert top_p_range(0.9).lower == 0.01 and top_p_range(0.9).upper == 1.0
    assert (count_range(4).lower, count_range(4).upper) == (1, 16)
    assert count_range(1).upper == 5 and count_range(40).upper == 100 and count_range(200).upper == 200
    with pytest.raises(ValueError, match="positive int"):
        count_range(0)
    assert (fraction_range(0.5).lower, fraction_range(0.5).upper) == (0.0, 1.0)


def test_range_for_picks_the_rule_by_the_settings_name():
    assert range_for("llm.max_tokens", 512, model="gpt-4o").upper == 2048
    assert range_for("model.max_completion_tokens", 512).upper == 2048
    assert range_for("retriever.search_kwargs.k", 4).upper == 16
    assert range_for("retriever.score_threshold", 0.5).upper == 1.0
    assert range_for("llm.temperature", 0.2).upper == 2.0
    assert range_for("llm.frequency_penalty", 0.0) is None
