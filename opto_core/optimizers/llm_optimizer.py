"""The LLM optimizer's machinery: one request per step, validation of suggestions, one retry, memory,
and fitting the prompt into the model's context window. OptoPrime and OPRO are built on it; `Search`
is not (see `opto_core.optimizers.protocol` for what every optimizer shares).

An LLM optimizer turns problem instances into a `Proposal`. The LLM's answer is parsed, each
suggested value goes through its `Parameter.validate`, and anything unusable (no JSON, an
unknown name, a value of the wrong kind, code that does not compile) is sent back to the LLM
once, with the exact reasons. Only valid values are ever returned as accepted.

Why the window matters: the rendered problem is budgeted (``token_budget``), but a local server
may hold only 2,048 to 8,192 tokens, prompt and answer together. When the LLM client knows its
window (``llm.context_window``), every request of a step is built to fit it:

    render budget = min(token_budget, window - answer tokens - system prompt - margin)

(the memory is part of the rendered problem, at most a third of it). The answer's reserve is sized from
what the step may answer (`opto_core.llm.window.answer_reserve`) unless ``max_answer_tokens`` is set. A
request is measured exactly where the client can count (``llm.count_tokens``: llama.cpp's ``/tokenize``,
or tiktoken's encoding on disk); elsewhere tokens are counted the way `opto_core.kernel.render` counts
them, scaled by the ratio the server's own counts showed. The validation
retry shortens or drops the failed answer (never the reasons), and shrinks the problem if even that
is not enough. A server that still answers "exceeds the context" gets one more try with a smaller
prompt (sized by the numbers in its message). ``Proposal.budget`` records which budget was used and why.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from opto_core.kernel.backward import ProblemInstance
from opto_core.kernel.bounds import MAX_REASONING_TEXT, bound_text, safe_repr, without_surrogates
from opto_core.kernel.graph import shorten
from opto_core.kernel.parameters import InvalidValue, Parameter
from opto_core.kernel.redact import redact
from opto_core.kernel.render import json_line
from opto_core.kernel.tokens import CHARS_PER_TOKEN, count_tokens
from opto_core.llm.usage import ChatModel, ChatResult, Usage
from opto_core.llm.window import answer_reserve
from opto_core.optimizers.parsing import ParseError, is_terminate, match_names, parse_answer, refusal
from opto_core.optimizers.protocol import ParameterSet, Proposal

#: Tokens kept free besides the answer, for chat framing and counting error: this, or 5% of the window.
MARGIN_TOKENS = 64
MARGIN_SHARE = 0.05
#: Tokens the chat format adds per message (role markers).
FRAMING_TOKENS = 4
#: The smallest rendered problem worth sending (tokens).
MIN_PROBLEM_TOKENS = 200
#: Server tokens per estimated token before the server has reported any count (render's estimate runs
#: up to 10% under for small-vocabulary tokenizers on code and JSON).
DEFAULT_TOKEN_RATIO = 1.1
#: A failed answer shorter than this (tokens) after cutting is dropped from the retry instead.
MIN_ANSWER_ECHO = 100


class ContextWindowTooSmall(ValueError):
    """The model's context window cannot hold the system prompt, the answer and a minimal problem."""

    def __init__(self, window: int, system_tokens: int, answer_tokens: int, detail: str = "") -> None:
        self.window, self.system_tokens, self.answer_tokens = window, system_tokens, answer_tokens
        super().__init__(
            f"the context window of {window} tokens cannot hold the optimizer's system prompt ({system_tokens} "
            f"tokens) plus its answer ({answer_tokens} tokens) and a problem worth sending"
            f"{': ' + detail if detail else ''}. Give the model server a larger context (llama.cpp -c/--ctx-size, "
            "Ollama num_ctx, start_server(n_ctx=...)), or lower max_answer_tokens"
        )


class PromptTooLong(RuntimeError):
    """The server refused a step's request as too long, again after the prompt was shrunk once."""


@dataclass
class MemoryEntry:
    """A past step: the values then, and what the feedback said about them."""

    values: dict[str, Any]
    feedback: str
    score: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"values": self.values, "feedback": self.feedback, "score": self.score}


@dataclass
class Fit:
    """How one step fits the context window (all token counts are the server's, except ``budget``)."""

    window: int | None
    source: str
    answer: int | None  # tokens kept for (and asked of) the answer
    margin: int
    ratio: float  # server tokens per estimated token
    system: int  # tokens of the system prompt
    budget: int  # the render budget, in estimated tokens (render's own unit)
    configured: int
    reason: str
    notes: list[str] = field(default_factory=list)
    #: exact tokens of a request (the server's own count, `opto_core.llm.window`), None where unknown
    count: Callable[[Sequence[dict[str, str]]], int | None] | None = None
    counted: bool = False  # whether any check of this step used an exact count

    @property
    def room(self) -> int | None:
        """Estimated tokens all messages together may take (None: no limit known)."""
        if self.window is None:
            return None
        return int((self.window - (self.answer or 0) - self.margin) / self.ratio)

    def over(self, messages: Sequence[dict[str, str]]) -> int:
        """By how many estimated tokens ``messages`` exceed the room (<= 0: they fit). Exact where the
        endpoint counts (converted to render's unit), else the estimate scaled by the ratio."""
        if self.window is None:
            return -1
        exact = self.count(messages) if self.count is not None else None
        if exact is None:
            return estimate(messages) - (self.room or 0)
        self.counted = True
        free = self.window - (self.answer or 0) - self.margin
        return math.ceil((exact - free) * max(1, estimate(messages)) / max(1, exact))

    def record(self, memory_tokens: int) -> dict[str, Any]:
        data: dict[str, Any] = {"tokens": self.budget, "configured": self.configured, "reason": self.reason}
        if self.window is not None:
            data.update(
                window=self.window,
                window_source=self.source,
                answer_tokens=self.answer,
                system_tokens=self.system,
                memory_tokens=memory_tokens,
                margin=self.margin,
                token_ratio=round(self.ratio, 3),
                counted="exact" if self.counted else "estimated",
            )
        if self.notes:
            data["notes"] = list(self.notes)
        return data


def estimate(messages: Sequence[dict[str, str]]) -> int:
    """Estimated tokens of a chat request (render's count plus the framing of each message)."""
    return sum(count_tokens(m["content"]) + FRAMING_TOKENS for m in messages)


class LLMOptimizer(ParameterSet):
    """Base class of the LLM optimizers: an LLM client, the memory of the last ``memory_size`` steps,
    a validation retry (``retry_invalid``), and requests fitted to the context window.

    A subclass writes `build_messages` (the request, rendered within `render_budget`) and its
    ``system_prompt``."""

    system_prompt = ""

    def __init__(
        self,
        parameters: Sequence[Parameter] | None,
        llm: ChatModel | None = None,
        *,
        memory_size: int = 5,
        token_budget: int = 8000,
        temperature: float | None = None,
        max_answer_tokens: int | None = None,
        retry_invalid: bool = True,
    ) -> None:
        if memory_size < 0:
            raise ValueError("memory_size must be >= 0 (0 turns memory off)")
        super().__init__(parameters)
        self._llm = llm
        self.memory_size = memory_size
        self.memory: list[MemoryEntry] = []
        self.token_budget = token_budget
        self.temperature = temperature
        self.max_answer_tokens = max_answer_tokens
        self.retry_invalid = retry_invalid
        self._fit: Fit | None = None  # the current step's fit; None outside a step
        self._window_override: int | None = None  # a window a server's context error stated
        self._token_ratio = DEFAULT_TOKEN_RATIO

    @property
    def llm(self) -> ChatModel:
        """The LLM client the optimizer was given (it never builds one: which model, endpoint and
        key to use is the caller's decision)."""
        if self._llm is None:
            raise ValueError(
                f"{type(self).__name__} has no LLM client: pass one, e.g. "
                f"{type(self).__name__}(parameters, OpenAIChat()) with opto_core.OpenAIChat "
                "(any OpenAI-compatible endpoint), or set optimizer.llm = ..."
            )
        return self._llm

    @llm.setter
    def llm(self, client: ChatModel) -> None:
        self._llm = client

    @property
    def llm_client(self) -> ChatModel | None:
        """The LLM client, or None when none was given (`llm` raises instead)."""
        return self._llm

    def resize_memory(self, size: int) -> None:
        """Keep the last ``size`` steps from now on (0 turns memory off); older entries go now."""
        if size < 0:
            raise ValueError("memory_size must be >= 0 (0 turns memory off)")
        self.memory_size = size
        del self.memory[: len(self.memory) - size]

    @property
    def render_budget(self) -> int:
        """Tokens the rendered problem (memory included) may take in this step: ``token_budget``,
        or less when the context window requires it. Subclasses render within this."""
        return self._fit.budget if self._fit is not None else self.token_budget

    # ----- memory ----------------------------------------------------------------------
    def remember(self, instances: Sequence[ProblemInstance]) -> None:
        if self.memory_size == 0:
            return
        scores = [fb.score for inst in instances for fb in inst.feedback.values() if fb.score is not None]
        text = " || ".join(inst.feedback_text() for inst in instances)
        self.memory.append(
            MemoryEntry(self.current_values(), shorten(text, 1500), sum(scores) / len(scores) if scores else None)
        )
        del self.memory[: -self.memory_size]

    def memory_text(self, limit_tokens: int | None = None) -> str:
        """The memory section; within ``limit_tokens`` (default: a third of the render budget when
        the window limits this step) the newest entries are kept and the oldest left out."""
        if not self.memory or self.memory_size == 0:
            return ""
        if limit_tokens is None and self._fit is not None and self._fit.window is not None:
            limit_tokens = self._fit.budget // 3
        blocks = []
        for entry in self.memory:
            values = {k: shorten(v, 600) if isinstance(v, str) else v for k, v in entry.values.items()}
            blocks.append(json_line({"variables": values, "feedback": entry.feedback}))  # one line, breaks escaped
        head = "\n#Memory\nEarlier values of the variables and the feedback they got (oldest first):\n"
        if limit_tokens is not None:
            kept: list[str] = []
            used = count_tokens(head) + 20
            for block in reversed(blocks):
                used += count_tokens(block) + 1
                if used > limit_tokens:
                    break
                kept.insert(0, block)
            if not kept:
                return ""
            if len(kept) < len(blocks):
                head += f"({len(blocks) - len(kept)} older entries left out to fit the context window)\n"
            blocks = kept
        return head + "\n".join(blocks) + "\n"

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint must hold to resume this optimizer exactly."""
        return {"memory": [entry.to_dict() for entry in self.memory]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.memory = [MemoryEntry(e["values"], e["feedback"], e.get("score")) for e in state.get("memory", [])]

    # ----- one step ----------------------------------------------------------------------
    def build_messages(self, instances: Sequence[ProblemInstance]) -> list[dict[str, str]]:
        """The request for ``instances``; render the problem within ``self.render_budget``."""
        raise NotImplementedError

    def response_schema(self) -> dict[str, Any]:
        """JSON schema of the answer, for servers that constrain decoding to it."""
        kinds = {
            "float": {"type": "number"},
            "int": {"type": "integer"},
            "text": {"type": "string"},
            "code": {"type": "string"},
        }
        properties = {name: kinds.get(p.kind, {}) for name, p in self.trainable.items()}
        return {
            "type": "object",
            "properties": {
                "reasoning": {"type": "string"},
                "suggestion": {"type": "object", "properties": properties},
            },
            "required": ["reasoning", "suggestion"],
        }

    def step(self, instances: ProblemInstance | Sequence[ProblemInstance], *, max_calls: int | None = None) -> Proposal:
        """One LLM call, plus one validation retry when ``retry_invalid`` and ``max_calls`` allow it
        (the loop passes the calls its budget has left), that proposes new values for the parameters."""
        if isinstance(instances, ProblemInstance):
            instances = [instances]
        self._need_trainable()
        if max_calls is not None and max_calls < 1:
            raise ValueError(f"max_calls must be >= 1 (a step makes at least one LLM call), got {max_calls}")
        allow_retry = self.retry_invalid and (max_calls is None or max_calls >= 2)
        self._fit = fit = self._plan()
        try:
            return self._step(list(instances), fit, allow_retry)
        finally:
            self._fit = None

    def _step(self, instances: list[ProblemInstance], fit: Fit, allow_retry: bool) -> Proposal:
        usage = Usage()
        proposal = Proposal()
        messages = self._build(instances, fit)
        memory_tokens = count_tokens(self.memory_text()) if self.memory else 0
        result, messages = self._send(messages, usage, lambda: self._build(instances, fit))
        first_messages = messages
        problems = self._read(result.text, proposal)
        proposal.attempts = 1
        retry_messages = None
        if problems and allow_retry and not proposal.terminated:
            note = self._retry_note(problems, proposal)
            answer = result.text
            try:
                retry_messages = self._retry_messages(instances, first_messages, answer, note, fit)
            except ContextWindowTooSmall as exc:  # the first answer stands, with its rejections: no failed request
                fit.notes.append(f"retry skipped, it cannot fit the context window: {exc}")
        if retry_messages is not None:
            try:
                result, _ = self._send(
                    retry_messages,
                    usage,
                    lambda: self._retry_messages(instances, self._build(instances, fit), answer, note, fit),
                )
            except BaseException:
                self.remember(instances)  # the first call succeeded: the step counts for memory
                raise
            retry = Proposal()
            self._read(result.text, retry)
            proposal.attempts = 2
            proposal.accepted.update(retry.accepted)
            if retry.reasoning and retry.reasoning != proposal.reasoning:  # keep both attempts' reasoning
                proposal.reasoning = (
                    f"{proposal.reasoning}\n[retry] {retry.reasoning}" if proposal.reasoning else retry.reasoning
                )
            proposal.rejected = {
                k: v for k, v in {**proposal.rejected, **retry.rejected}.items() if k not in proposal.accepted
            }
            proposal.terminated = retry.terminated and not proposal.accepted
            proposal.error = retry.error
        self.remember(instances)  # only once a call succeeded: a failed step leaves no trace in memory
        proposal.usage = usage.to_dict()
        proposal.budget = fit.record(memory_tokens)
        return proposal

    @staticmethod
    def _retry_note(problems: list[str], proposal: Proposal) -> str:
        """The validation retry's request: the exact reasons, and exactly what is kept."""
        if proposal.accepted:
            kept = (
                "Accepted from your first answer: " + ", ".join(proposal.accepted) + ". These values are kept "
                "unless you give a new value; everything else from your first answer is dropped."
            )
        else:
            kept = "Nothing from your first answer was accepted: give every change you still want."
        return (
            "Some of your answer could not be used:\n- "
            + "\n- ".join(problems)
            + "\n"
            + kept
            + "\nAnswer again with one JSON object in the same format; use only the variable names in #Variables."
        )

    # ----- fitting the context window -------------------------------------------------------
    def _plan(self) -> Fit:
        """This step's budget: ``token_budget``, or what the context window leaves of it."""
        llm = self.llm
        window = self._window_override or getattr(llm, "context_window", None)
        source = (
            "the server's context error"
            if self._window_override
            else str(getattr(llm, "context_window_source", "") or "the LLM client")
        )
        system = count_tokens(self.system_prompt) + FRAMING_TOKENS
        if not isinstance(window, int) or window <= 0:
            return Fit(
                None,
                "",
                self.max_answer_tokens,
                0,
                self._token_ratio,
                system,
                self.token_budget,
                self.token_budget,
                "the configured token_budget (the context window is unknown)",
            )
        return self._fit_window(window, source, self.token_budget)

    def _counter(self) -> Callable[[Sequence[dict[str, str]]], int | None] | None:
        """Exact tokens of a request where the LLM client can count (``count_tokens``), else None."""
        count = getattr(self._llm, "count_tokens", None)
        if not callable(count):
            return None

        def exact(messages: Sequence[dict[str, str]]) -> int | None:
            total = 0
            for message in messages:
                tokens = count(message["content"])
                if not isinstance(tokens, int):
                    return None
                total += tokens + FRAMING_TOKENS
            return total

        return exact

    def _fit_window(self, window: int, source: str, limit: int) -> Fit:
        configured_answer = self.max_answer_tokens or getattr(self._llm, "max_tokens", None)
        if configured_answer:
            answer, answer_why = int(configured_answer), "as configured"
        else:
            answer, answer_why = answer_reserve(self.trainable.values(), window)
        margin = max(MARGIN_TOKENS, int(window * MARGIN_SHARE))
        counter = self._counter()
        system_message = [{"role": "system", "content": self.system_prompt}]
        exact_system = counter(system_message) if counter is not None else None
        if exact_system is not None:  # the server counts: its ratio for our text, from the system prompt
            ratio = min(3.0, max(0.5, exact_system / max(1, estimate(system_message))))
            system = exact_system
        else:
            counter = None
            ratio = self._token_ratio
            system = math.ceil((count_tokens(self.system_prompt) + FRAMING_TOKENS) * ratio)
        if window < system + answer + margin + math.ceil(MIN_PROBLEM_TOKENS * ratio):
            raise ContextWindowTooSmall(
                window,
                system,
                answer,
                f"a margin of {margin} and at least {MIN_PROBLEM_TOKENS} tokens of problem are needed besides",
            )
        fitted = int((window - answer - margin - system) / ratio) - FRAMING_TOKENS
        if self.token_budget <= fitted and limit >= self.token_budget:
            reason = f"the configured token_budget; it fits the context window of {window} tokens ({source})"
            return Fit(
                window,
                source,
                answer,
                margin,
                ratio,
                system,
                self.token_budget,
                self.token_budget,
                reason,
                count=counter,
            )
        budget = min(fitted, limit)
        reason = (
            f"the context window: {window} tokens ({source}) minus {answer} for the answer ({answer_why}), "
            f"{system} for the system prompt and a margin of {margin}, leaves {budget} for the problem and "
            f"the memory (token_budget is {self.token_budget})"
        )
        return Fit(window, source, answer, margin, ratio, system, budget, self.token_budget, reason, count=counter)

    def _fits(self, messages: list[dict[str, str]], fit: Fit) -> bool:
        return fit.room is None or fit.over(messages) <= 0

    def _build(self, instances: list[ProblemInstance], fit: Fit) -> list[dict[str, str]]:
        """``build_messages`` within the window: when the rendered problem still comes out too long
        (render keeps the variables, constraints and feedback whole), the budget shrinks until it fits."""
        messages = self.build_messages(instances)
        for _ in range(8):
            if self._fits(messages, fit):
                return messages
            assert fit.room is not None and fit.window is not None
            over = fit.over(messages)
            smaller = min(fit.budget - over - 16, int(fit.budget * 0.9))
            if smaller < MIN_PROBLEM_TOKENS:
                break
            fit.notes.append(
                f"the rendered problem came out at {estimate(messages)} tokens, over the "
                f"{fit.room} the window allows: rendered again within {smaller}"
            )
            fit.budget = smaller
            messages = self.build_messages(instances)
        if self._fits(messages, fit):
            return messages
        assert fit.window is not None
        raise ContextWindowTooSmall(
            fit.window,
            fit.system,
            fit.answer or 0,
            f"even cut to the variables, constraints and feedback, the problem needs "
            f"{(fit.count(messages) if fit.count else None) or math.ceil(estimate(messages) * fit.ratio)}"
            f" tokens with the system prompt",
        )

    def _retry_messages(
        self, instances: list[ProblemInstance], messages: list[dict[str, str]], answer: str, note: str, fit: Fit
    ) -> list[dict[str, str]]:
        """The validation retry, built to fit: the failed answer whole, shortened, or left out (the
        reasons in ``note`` always stay whole); if even that is too long, the problem is rendered smaller."""
        for _ in range(6):
            whole = messages + [{"role": "assistant", "content": answer}, {"role": "user", "content": note}]
            if fit.room is None or self._fits(whole, fit):
                return whole
            room = fit.room - estimate(messages) - count_tokens(note) - 2 * FRAMING_TOKENS
            if room >= MIN_ANSWER_ECHO:
                chars = int(room * CHARS_PER_TOKEN * 0.9)
                short = shorten(answer, chars)
                while count_tokens(short) > room and chars > 200:
                    chars = int(chars * 0.8)
                    short = shorten(answer, chars)
                cut = messages + [{"role": "assistant", "content": short}, {"role": "user", "content": note}]
                if self._fits(cut, fit):
                    fit.notes.append(
                        f"retry: the failed answer was cut from {len(answer)} to {len(short)} "
                        "characters to fit the context window"
                    )
                    return cut
            dropped = (
                f"(Your first answer, {len(answer)} characters, is left out here to fit the context window.)\n" + note
            )
            if messages and messages[-1]["role"] == "user":
                merged = messages[:-1] + [{"role": "user", "content": messages[-1]["content"] + "\n\n" + dropped}]
            else:
                merged = messages + [{"role": "user", "content": dropped}]
            if self._fits(merged, fit):
                fit.notes.append("retry: the failed answer was left out to fit the context window")
                return merged
            over = fit.over(merged)
            smaller = min(fit.budget - over - 16, int(fit.budget * 0.9))
            if smaller < MIN_PROBLEM_TOKENS:
                break
            fit.notes.append(f"retry: the problem was rendered again within {smaller} tokens to fit the context window")
            fit.budget = smaller
            messages = self._build(instances, fit)
        assert fit.window is not None
        raise ContextWindowTooSmall(
            fit.window, fit.system, fit.answer or 0, "the validation retry does not fit even with the smallest problem"
        )

    def _send(
        self, messages: list[dict[str, str]], usage: Usage, rebuild: Callable[[], list[dict[str, str]]]
    ) -> tuple[ChatResult, list[dict[str, str]]]:
        """One call; a server's "exceeds the context" gets one more try with a smaller prompt."""
        fit = self._fit
        try:
            result = self._call(messages, usage)
        except Exception as exc:
            if not getattr(exc, "context_window_exceeded", False) or fit is None:
                raise
            self._shrink_after(exc, messages, fit)
            messages = rebuild()
            try:
                result = self._call(messages, usage)
            except Exception as again:
                if getattr(again, "context_window_exceeded", False):
                    raise PromptTooLong(
                        f"the server refused the request as longer than its context window twice, the second time "
                        f"with the problem rendered within {fit.budget} tokens ({again}). Give the server a larger "
                        "context, set OPTO_CONTEXT_WINDOW to its real size, or lower max_answer_tokens"
                    ) from again
                raise
        self._learn_ratio(messages, result)
        return result, messages

    def _shrink_after(self, exc: BaseException, messages: list[dict[str, str]], fit: Fit) -> None:
        """Use the server's numbers (its window, the tokens it counted) for a smaller budget."""
        window = getattr(exc, "window", None)
        counted = getattr(exc, "request_tokens", None)
        sent = estimate(messages)
        if counted:
            self._token_ratio = max(self._token_ratio, min(3.0, counted / max(1, sent)))
        before = fit.budget
        if window:
            self._window_override = int(window)
            try:
                new = self._fit_window(int(window), "the server's context error", before)
            except ContextWindowTooSmall:
                raise
            fit.window, fit.source, fit.answer, fit.margin, fit.ratio, fit.system = (
                new.window,
                new.source,
                new.answer,
                new.margin,
                new.ratio,
                new.system,
            )
            fit.budget = min(new.budget, int(before * 0.9))
            fit.reason = new.reason
        else:  # nothing to go by: half the budget
            fit.budget = max(MIN_PROBLEM_TOKENS, before // 2)
        fit.notes.append(
            f"the server refused the request as too long ({str(exc)[:300]}); retried with the problem "
            f"rendered within {fit.budget} tokens instead of {before}"
        )

    def _learn_ratio(self, messages: list[dict[str, str]], result: ChatResult) -> None:
        """Calibrate the estimate with the server's own count of the prompt (never below 1)."""
        if result.cached or not result.prompt_tokens:
            return
        observed = result.prompt_tokens / max(1, estimate(messages))
        self._token_ratio = min(3.0, max(1.0, observed * 1.05))

    def _call(self, messages: list[dict[str, str]], usage: Usage) -> ChatResult:
        fit = self._fit
        max_tokens = fit.answer if fit is not None and fit.window is not None else self.max_answer_tokens
        messages = [{**m, "content": redact(m["content"])} for m in messages]  # no secret reaches the endpoint
        result = self.llm.chat(
            messages, json_schema=self.response_schema(), temperature=self.temperature, max_tokens=max_tokens
        )
        usage.add(result)
        return result

    def _read(self, text: str, proposal: Proposal) -> list[str]:
        """Fill ``proposal`` from one answer; return the problems to report back."""
        if is_terminate(text):
            proposal.terminated = True
            proposal.reasoning = "TERMINATE"
            return []
        try:
            answer = parse_answer(text)
        except ParseError as exc:
            proposal.error = str(exc)
            return [str(exc)]
        proposal.reasoning = _reasoning(answer.get("reasoning", ""))
        suggestion = answer.get("suggestion")
        if suggestion is None:
            others = {k: v for k, v in answer.items() if k not in ("reasoning", "answer")}
            matched, _ = match_names(others, list(self.trainable))
            suggestion = others if matched else {}
        if not isinstance(suggestion, dict):
            proposal.error = (
                f'"suggestion" must be a JSON object mapping variable names to values, got {type(suggestion).__name__}'
            )
            return [proposal.error]
        names = list(self.trainable)
        matched, unknown = match_names(suggestion, names)
        problems = []
        for key in unknown:
            why = refusal(key, suggestion, names)
            shown = safe_repr(key, 120)
            proposal.rejected[without_surrogates(bound_text(key, 200))] = f"{why}; the variables are {', '.join(names)}"
            problems.append(f"{shown} {why} (variables: {', '.join(names)})")
        for name, value in matched.items():
            try:
                proposal.accepted[name] = self.trainable[name].validate(value)
            except InvalidValue as exc:
                proposal.rejected[name] = exc.reason
                problems.append(f"{name}: {exc.reason}")
        if not suggestion and not proposal.terminated:
            proposal.terminated = True  # an empty suggestion means: change nothing
        return problems


def _reasoning(value: Any) -> str:
    """The answer's reasoning as bounded, valid text (whatever the model put there)."""
    if not isinstance(value, str):
        value = safe_repr(value, MAX_REASONING_TEXT)
    return without_surrogates(bound_text(value, MAX_REASONING_TEXT))
