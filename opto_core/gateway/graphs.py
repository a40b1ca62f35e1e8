"""Recorded traffic -> conversation records -> an OPTO graph, through the core's conversation builder.

The wire shows every model call of a run: the messages it sent (the system prompt, the user's
input, earlier answers passed back, tool results) and what came back (text or tool calls). That is
all `opto_core.kernel.conversation` needs. Each exchange of a run becomes, in order:

1. the **tool runs** its request reports for the first time: a ``tool`` message answering a call an
   earlier answer requested is the result of that call (the program ran the tool between the two
   calls); a tool run node and a results message, linked to the request by the call id;
2. the **new input messages** (user messages not seen before in the run). One that contains an
   earlier answer's text or a tool result (found by the provenance index: exact text, contained as in
   an f-string, or bound by a placeholder of a message template rule the message matched) is a message
   the program *composed*: an op with data edges from them. This is the data flow between calls that a
   pipeline like ``summarize(draft(topic))`` has;
3. the **model call**, with the parameters its request showed (the gateway's rules: system prompt,
   message templates, settings, tool descriptions), its usage and cost;
4. its **answer**: a message, or a tool request (of type ``handoff`` when every call is
   ``transfer_to_*``, the OpenAI Agents SDK's handoff tools).

An agent is named by the system prompt rule that matched its calls (``triage.system`` -> ``triage``);
calls whose system prompt no rule owns are ``model`` (no system prompt) or ``model_1``, ``model_2``...
by distinct system prompt. A call continues its agent's turn when it carries the results of that
agent's latest tool request; otherwise it opens a new turn.

Upstream failures the program recovered from (a retried 500) are listed in the graph's metadata
(``upstream_failures``); a failure with no later call is the run's exception node. Opaque requests
are counted (``opaque_requests``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from opto_core.gateway.parameters import PromptRule, SettingRule
from opto_core.gateway.recording import INFRASTRUCTURE, OPAQUE, Exchange, Run
from opto_core.gateway.wire import WireRequest
from opto_core.kernel.conversation import (
    KIND_MESSAGE,
    KIND_TOOL_REQUEST,
    KIND_TOOL_RESULTS,
    ROLE_PROMPT,
    ROLE_SETTING,
    ROLE_SYSTEM,
    ROLE_TOOL_DESCRIPTION,
    ConversationLog,
    MessageRecord,
    PromptItem,
    ToolRunRecord,
    Turn,
    build_graph,
    text_of,
)
from opto_core.kernel.graph import Graph
from opto_core.kernel.parameters import Parameter
from opto_core.kernel.provenance import ProvenanceIndex

ADAPTER = "opto_core.gateway"
FRAMEWORK = "openai-wire"
#: The Agents SDK names its handoff tools ``transfer_to_<agent>``.
HANDOFF_PREFIX = "transfer_to_"
#: How a message template is named in a run's provenance index (a parameter, not a message: never a source).
TEMPLATE_NODE = "template:"


class UpstreamError(RuntimeError):
    """The model endpoint failed a call (an HTTP error status, or no answer at all)."""


@dataclass
class ValueStep:
    """A value a run produced outside any model call (a retriever's documents, a tool run no later call
    shows): its text, the text it consumed (its data edges come from the earlier values found there)."""

    source: str
    text: str
    consumed: str
    started: float


def graph_of_run(
    run: Run,
    parameters: Any,
    *,
    output: Any = None,
    error: BaseException | None = None,
    steps: list[Any] | None = None,
    meta: dict[str, Any] | None = None,
    prices: Any = None,
) -> Graph:
    """The OPTO graph of one recorded run; ``parameters`` is the gateway's `TrafficParameters`.

    ``output`` is what the program returned or printed: when it is not its last answer verbatim it
    becomes the graph's output, composed from the answers whose text it contains (else from the last
    answer). ``error`` is how the program failed, if it did (the graph's exception output). ``steps``
    interleaves `ValueStep`s with the run's exchanges (in time order; default: the exchanges alone).
    """
    traffic = _TrafficLog(run, parameters, prices)
    log, notes = traffic.build(steps if steps is not None else run.exchanges)
    if output is not None:
        traffic.add_output(output)
    if error is not None:
        log.finish(error)
    return build_graph(log, {}, adapter=ADAPTER, framework=FRAMEWORK, meta={**notes, **(meta or {})})


class _TrafficLog:
    """Turns one run's exchanges into a `ConversationLog` (see the module docstring)."""

    def __init__(self, run: Run, parameters: Any, prices: Any) -> None:
        self.run = run
        self.parameters = parameters
        self.log = ConversationLog("run", f"run {run.id}", meta={"gateway_run": run.id})
        self.log.started = run.started
        self.texts = ProvenanceIndex()  # answers and tool results by text -> message id (composed messages)
        self.inputs: set[tuple[str, str]] = set()
        self.requests: dict[str, tuple[str, int, str, str]] = {}  # call id -> (agent, turn, tool, arguments)
        self.tool_done: set[str] = set()
        self.turns: dict[str, Turn] = {}
        self.pending: dict[str, set[str]] = {}  # agent -> ids of its latest tool request
        self.answered_by: dict[str, str] = {}  # answer text -> agent
        self.unnamed: dict[str, str] = {}  # system text no rule owns -> model_k
        self.prices = prices
        self.cost = 0.0
        self.priced = True

    def build(self, steps: list[Any]) -> tuple[ConversationLog, dict[str, Any]]:
        exchanges = [step for step in steps if isinstance(step, Exchange)]
        failures: list[dict[str, Any]] = []
        opaque = 0
        position = -1
        for step in steps:
            if isinstance(step, ValueStep):
                self.add_value(step)
                continue
            exchange = step
            position += 1
            if exchange.outcome == OPAQUE:
                opaque += 1
                continue
            request = exchange.parsed()
            if request is None:
                opaque += 1
                continue
            last = position == len(exchanges) - 1
            if exchange.outcome == INFRASTRUCTURE:
                failures.append({"exchange": exchange.id, "status": exchange.status, "error": exchange.error})
                if not last:
                    continue  # the program went on (a retry): not part of the data flow
            self.add(exchange, request)
        for turn in self.turns.values():
            self.log.end_turn(turn)
        ended = max((e.started + e.seconds for e in exchanges), default=self.run.started)
        self.log.ended = ended
        notes: dict[str, Any] = {"exchanges": len(exchanges)}
        if failures:
            notes["upstream_failures"] = failures
        if opaque:
            notes["opaque_requests"] = opaque
        notes["cost_usd"] = round(self.cost, 8) if self.priced else None
        return self.log, notes

    def add_output(self, output: Any) -> None:
        """The program's own output, as the run's output message (see `graph_of_run`)."""
        text = text_of(output)
        last = self.log.last_message()
        if last is not None and last.source != "user" and last.content == text:
            return
        answers = [m.id for m in self.log.messages.values() if m.id.startswith("answer:")]
        sources = tuple(match.node for match in self.texts.find_all(text)) or tuple(answers[-1:])
        self.log.add_message(
            MessageRecord("program:output", "program", KIND_MESSAGE, "output", text, derived_from=sources)
        )
        self.log.output_message_id = "program:output"

    def add_value(self, step: ValueStep) -> None:
        message_id = f"value:{len(self.log.messages)}"
        sources = tuple(match.node for match in self.texts.find_all(step.consumed)) if step.consumed else ()
        self.log.add_message(
            MessageRecord(
                message_id, step.source, KIND_MESSAGE, "value", step.text, derived_from=sources, created=step.started
            )
        )
        self.texts.register(step.text, message_id)

    # ----- one exchange ---------------------------------------------------------------------------------
    def add(self, exchange: Exchange, request: WireRequest) -> None:
        plan = self.parameters.match(request.api, exchange.request, request) if not exchange.applied else None
        applied = exchange.applied if plan is None else plan.applied
        positions = exchange.positions if plan is None else plan.positions
        agent = exchange.agent if plan is None else plan.agent
        agent = agent or self.unnamed_agent(request)
        self.add_tool_results(request)
        turn = self.turn_of(agent, request)
        self.add_inputs(request, self.templates_at(applied, positions))
        answer = exchange.wire_answer()
        usage: dict[str, Any] = dict(answer.usage) if answer is not None else {}
        cost = self.cost_of(request.model, usage)
        if cost is not None:
            usage["cost_usd"] = cost
        output: Any = None
        call_ids: tuple[str, ...] = ()
        if answer is not None:
            output = [dict(c) for c in answer.tool_calls] if answer.tool_calls else (answer.text or "")
            call_ids = tuple(c["id"] for c in answer.tool_calls)
        error = (
            UpstreamError(exchange.error or f"HTTP {exchange.status}") if exchange.outcome == INFRASTRUCTURE else None
        )
        call = self.log.new_llm_call(
            agent=agent,
            prompt=[self.prompt_item(agent, m) for m in request.messages],
            tools=[t["name"] for t in request.tools],
            settings=dict(request.settings),
            model=request.model,
            turn=turn.index,
            output=output,
            call_ids=call_ids,
            usage=usage,
            error=error,
            seconds=exchange.seconds,
            parameters=self.roles(applied, positions, request),
        )
        call.started = exchange.started
        if answer is None or error is not None:
            return
        message_id = f"answer:{exchange.id}"
        if answer.tool_calls:
            handoff = all(c["name"].startswith(HANDOFF_PREFIX) for c in answer.tool_calls)
            for tool_call in answer.tool_calls:
                self.requests[tool_call["id"]] = (agent, turn.index, tool_call["name"], tool_call["arguments"])
            self.pending[agent] = set(call_ids)
            # a handoff is a tool request too (its result, read from the next agent's request, is the tool run)
            self.log.add_message(
                MessageRecord(
                    message_id,
                    agent,
                    KIND_TOOL_REQUEST,
                    "handoff" if handoff else "tool_calls",
                    text_of(output),
                    turn=turn.index,
                    call_ids=call_ids,
                    created=exchange.started + exchange.seconds,
                )
            )
        else:
            self.pending.pop(agent, None)
            self.log.add_message(
                MessageRecord(
                    message_id,
                    agent,
                    KIND_MESSAGE,
                    "text",
                    output,
                    turn=turn.index,
                    final=True,
                    created=exchange.started + exchange.seconds,
                )
            )
            self.texts.register(output, message_id)
            self.answered_by.setdefault(output, agent)

    def add_tool_results(self, request: WireRequest) -> None:
        for message in request.messages:
            if message.role != "tool" or not message.call_ids:
                continue
            call_id = message.call_ids[0]
            origin = self.requests.get(call_id)
            if origin is None or call_id in self.tool_done:
                continue
            self.tool_done.add(call_id)
            agent, turn, tool, arguments = origin
            self.log.add_tool_run(ToolRunRecord(agent, turn, call_id, tool, arguments, message.content))
            message_id = f"tool:{call_id}"
            self.log.add_message(
                MessageRecord(
                    message_id, agent, KIND_TOOL_RESULTS, "tool_result", message.content, turn=turn, call_ids=(call_id,)
                )
            )
            self.texts.register(message.content, message_id)

    def turn_of(self, agent: str, request: WireRequest) -> Turn:
        """The agent's open turn when this request answers its latest tool request, else a new one."""
        pending = self.pending.get(agent, set())
        continues = any(m.role == "tool" and m.call_ids and m.call_ids[0] in pending for m in request.messages)
        turn = self.turns.get(agent)
        if turn is None or not continues:
            if turn is not None:
                self.log.end_turn(turn)
            turn = self.turns[agent] = self.log.begin_turn(agent)
        return turn

    def add_inputs(self, request: WireRequest, templates: dict[int, PromptRule]) -> None:
        for position, message in enumerate(request.messages):
            if message.role != "user" or (message.role, message.content) in self.inputs:
                continue
            self.inputs.add((message.role, message.content))
            self.log.add_message(
                MessageRecord(
                    f"input:{len(self.inputs)}",
                    "user",
                    KIND_MESSAGE,
                    "user",
                    message.content,
                    derived_from=self.sources_of(message.content, templates.get(position)),
                )
            )

    def templates_at(self, applied: list[str], positions: dict[str, list[int]]) -> dict[int, PromptRule]:
        """The template rules that matched a request, by message position."""
        found: dict[int, PromptRule] = {}
        for rule in self.parameters.prompts:
            if rule.template and rule.name in applied:
                for position in positions.get(rule.name, []):
                    found[position] = rule
        return found

    def sources_of(self, text: str, template: PromptRule | None) -> tuple[str, ...]:
        """The earlier answers and tool results a message was composed from, as the provenance index
        finds them. A message a template rule matched is known to the index as that template's output
        (its current value, registered here): the index's template rule then looks up each value the
        program put into a placeholder on its own (the constant text is the parameter's, not data)."""
        if template is not None:
            self.texts.register_template(template.current(), TEMPLATE_NODE + template.name)
        return tuple(match.node for match in self.texts.find_all(text) if not match.node.startswith(TEMPLATE_NODE))

    def prompt_item(self, agent: str, message: Any) -> PromptItem:
        role = message.role
        if message.is_system:
            return PromptItem("system", message.content, None)
        if role == "user":
            return PromptItem("user", message.content, "user")
        if role == "tool":
            origin = self.requests.get(message.call_ids[0]) if message.call_ids else None
            return PromptItem("tool", message.content, origin[0] if origin else agent, message.call_ids)
        source = agent
        if message.call_ids:
            origin = self.requests.get(message.call_ids[0])
            source = origin[0] if origin else agent
        elif message.content in self.answered_by:
            source = self.answered_by[message.content]
        return PromptItem("assistant", message.content, source, message.call_ids)

    def roles(self, applied: list[str], positions: dict[str, list[int]], request: WireRequest) -> dict[str, Parameter]:
        """The builder's roles of the parameters this request showed."""
        roles: dict[str, Parameter] = {}
        for name in applied:
            try:
                rule = self.parameters.rule(name)
            except KeyError:  # a rule removed since the run was recorded
                continue
            parameter = rule.parameter
            if isinstance(rule, PromptRule):
                # the request's system message: the builder links it as the agent's system parameter (its
                # current text, or an output of its current template); any other message it matched: a prompt
                first = positions.get(name, [None])[0]
                content = request.messages[0].content if first == 0 and request.messages[0].is_system else None
                system = content is not None and (
                    content == parameter.value or (rule.template and rule.current().match(content) is not None)
                )
                roles[ROLE_SYSTEM if system else ROLE_PROMPT + name] = parameter
            elif isinstance(rule, SettingRule):
                roles[ROLE_SETTING + rule.key] = parameter
            else:
                roles[ROLE_TOOL_DESCRIPTION + rule.tool] = parameter
        return roles

    def unnamed_agent(self, request: WireRequest) -> str:
        system = next((m.content for m in request.messages if m.is_system), None)
        if system is None:
            return "model"
        if system not in self.unnamed:
            self.unnamed[system] = f"model_{len(self.unnamed) + 1}"
        return self.unnamed[system]

    def cost_of(self, model: str, usage: dict[str, int]) -> float | None:
        if not usage:
            return None
        if self.prices is None:
            from opto_core.llm.client import load_prices

            self.prices = load_prices()
        from opto_core.llm.client import price_of

        price = price_of(model, self.prices)
        if price is None:
            self.priced = False
            return None
        cost = (usage.get("prompt_tokens", 0) * price[0] + usage.get("completion_tokens", 0) * price[1]) / 1e6
        self.cost += cost
        return round(cost, 8)
