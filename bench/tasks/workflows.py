"""'Fix the workflow' tasks: one small tool-using workflow per framework, with three planted faults.

The workflow is a grocery cashier: the customer's order ("2 x apple @ 1.25; pear @ 0.80")
goes to a tool that adds it up, and the model adds the sales tax and states the total. The
correct total is the exact subtotal plus 8% tax, to the cent. Three faults are planted, one of
each kind of parameter:

- **prompt**: the system prompt says the sales tax is 20% (the store's rate is 8%);
- **tool code**: ``order_subtotal`` ignores the quantities, and raises on an item written
  without one ("pear @ 0.80", which its docstring says means 1);
- **model setting**: the temperature is 1.3; above 0.5 the model rounds the total to whole
  dollars ("about $5"), which is never right to the cent.

The model is a deterministic rule-based fake (`answer_policy`), built with each framework's
own model interface (a LangChain ``BaseChatModel``, a DSPy custom engine, an AutoGen
``ChatCompletionClient``), so that a task's score depends only on the parameters an optimizer
changes. It reads only what it is sent: the tax rate in its system prompt (the first
``N%``), the tool's result, and its temperature. The feedback names the expected total and
the store's tax rate, as a user reviewing the answers would.

The same workflow exists as traced plain Python (ours: `python_target`; Trace's: `trace_program`)
for the comparison with trace-opt in `bench/info_cost.py` and `bench/compare.py`. Each
framework version (`langchain_workflow`, `dspy_workflow`, `autogen_workflow`) returns the
framework object and how to run it; `framework_target` wraps it with our adapter when that
adapter is installed.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
from dataclasses import dataclass
from typing import Any, Callable

from opto_core.kernel.feedback import Feedback
from opto_core.kernel.parameters import Parameter

TAX_RATE = 8.0  # percent: the store's real rate, used by the metric only
SYSTEM_PROMPT = (
    "You are the cashier of a small grocery store. Add up the customer's order with the "
    "order_subtotal tool, then add the sales tax of 20% and reply with the total to pay, "
    "in dollars with cents."
)
CLERK_PROMPT = "You are the clerk of a small grocery store. Add up the customer's order with the order_subtotal tool."
TEMPERATURE = 1.3
SLOPPY_ABOVE = 0.5  # the fake model rounds to whole dollars above this temperature
TEMPERATURE_BOUNDS = (0.0, 2.0)

GROCERIES = {
    "apple": 1.25,
    "pear": 0.80,
    "milk": 2.10,
    "bread": 3.45,
    "eggs": 4.20,
    "cheese": 6.75,
    "banana": 0.35,
    "coffee": 8.90,
    "rice": 2.60,
    "butter": 3.15,
    "tomato": 0.55,
    "yogurt": 1.15,
}


# ----- the tool, as shipped (with the planted bug), and the reference -----------------------------
def order_subtotal(order: str) -> float:
    """Add up an order such as '2 x apple @ 1.25; pear @ 0.80': the sum over its items of quantity times unit price (an item without a quantity counts once)."""
    total = 0.0
    for item in order.split(";"):
        quantity, rest = item.split(" x ")
        name, price = rest.split("@")
        total += float(price)
    return round(total, 2)


def reference_subtotal(order: str) -> float:
    """What ``order_subtotal`` should compute (used to make the examples, never shown to optimizers)."""
    total = 0.0
    for item in order.split(";"):
        item = item.strip()
        quantity = 1
        if " x " in item:
            count, item = item.split(" x ", 1)
            quantity = int(count)
        total += quantity * float(item.split("@")[1])
    return round(total, 2)


# ----- the rule-based model ----------------------------------------------------------------------------
def plan_policy(question: str) -> str:
    """The fake model's first turn: the order text to send to the tool."""
    return question.split(":", 1)[-1].strip().rstrip("?").strip()


def answer_policy(system_prompt: str, tool_result: Any, temperature: float | None) -> str:
    """The fake model's final answer from its system prompt, the tool's result and its temperature."""
    try:
        subtotal = float(str(tool_result).strip())
    except ValueError:
        return f"Sorry, I could not add up the order: {tool_result}"
    match = re.search(r"(\d+(?:\.\d+)?)\s*%", system_prompt or "")
    rate = float(match.group(1)) if match else 0.0
    total = subtotal * (1 + rate / 100)
    if (temperature or 0.0) > SLOPPY_ABOVE:
        return f"The total is about ${round(total)}."
    return f"The total is ${total:.2f}."


# ----- examples and metric ----------------------------------------------------------------------------
def make_order(rng: random.Random) -> str:
    items = rng.sample(sorted(GROCERIES), rng.randint(2, 4))
    parts = []
    for name in items:
        quantity = rng.choice([1, 2, 2, 3, 4, None])  # None: written without a quantity
        parts.append(
            f"{name} @ {GROCERIES[name]:.2f}" if quantity is None else f"{quantity} x {name} @ {GROCERIES[name]:.2f}"
        )
    return "; ".join(parts)


def question_for(order: str) -> str:
    return f"What is the total to pay for this order: {order}?"


def expected_total(order: str) -> float:
    return round(reference_subtotal(order) * (1 + TAX_RATE / 100) + 1e-9, 2)


def generate(n: int, seed: int = 0) -> list[dict[str, Any]]:
    rng = random.Random(f"workflow:{seed}")
    out, seen = [], set()
    while len(out) < n:
        order = make_order(rng)
        if order not in seen:
            seen.add(order)
            out.append({"question": question_for(order), "order": order, "expected": expected_total(order)})
    return out


def splits(sizes: tuple[int, int, int], seed: int = 0) -> tuple[list, list, list]:
    pool = generate(sum(sizes), seed)
    train, val = sizes[0], sizes[0] + sizes[1]
    return pool[:train], pool[train:val], pool[val:]


def last_number(text: Any) -> float | None:
    numbers = re.findall(r"-?\d+(?:\.\d+)?", str(text).replace(",", "").replace("$", ""))
    return float(numbers[-1]) if numbers else None


def feedback(example: dict[str, Any], output: Any) -> Feedback:
    """1 when the stated total is right to the cent; the text gives the expected total and the tax rate."""
    value = last_number(output)
    expected = example["expected"]
    if value is not None and abs(value - expected) < 0.0051:
        return Feedback(1.0, "Correct total.")
    return Feedback(
        0.0,
        f"Wrong total for the order '{example['order']}': the customer must pay {expected:.2f} "
        f"(the exact subtotal of the order plus the store's {TAX_RATE:g}% sales tax, to the cent), "
        f"but the answer was {str(output)!r}.",
    )


FIXED_TOOL = '''def order_subtotal(order: str) -> float:
    """Add up an order such as '2 x apple @ 1.25; pear @ 0.80': the sum over its items of quantity times unit price (an item without a quantity counts once)."""
    total = 0.0
    for item in order.split(";"):
        item = item.strip()
        quantity = 1
        if " x " in item:
            count, item = item.split(" x ", 1)
            quantity = int(count)
        name, price = item.split("@")
        total += quantity * float(price)
    return round(total, 2)
'''
FIXED_PROMPT = SYSTEM_PROMPT.replace("20%", "8%")
FIXED_TEMPERATURE = 0.0


# ----- plain Python -----------------------------------------------------------------------------------
def python_target() -> Any:
    """The workflow as traced plain Python (opto_core.kernel.trace): prompt, temperature and tool code."""
    from opto_core.engine.target import FunctionTarget
    from opto_core.kernel.trace import op

    prompt = Parameter("cashier.system_prompt", "text", SYSTEM_PROMPT, description="the cashier model's system prompt")
    temperature = Parameter(
        "cashier.temperature",
        "float",
        TEMPERATURE,
        lower=TEMPERATURE_BOUNDS[0],
        upper=TEMPERATURE_BOUNDS[1],
        description="the cashier model's sampling temperature",
    )
    tool = op(order_subtotal, trainable=True, parameter_name="tools.order_subtotal.code")

    @op(name="plan_tool_call")
    def plan_tool_call(system_prompt: str, question: str, temperature: float) -> str:
        """The model's first turn: it calls order_subtotal with the order taken from the question."""
        return plan_policy(question)

    @op(name="write_answer")
    def write_answer(system_prompt: str, question: str, tool_result: float, temperature: float) -> str:
        """The model's second turn: it reads the tool's result and writes the answer, as its system prompt says."""
        return answer_policy(system_prompt, tool_result, temperature)

    def cashier(question: str) -> str:
        order = plan_tool_call(prompt, question, temperature)
        subtotal = tool(order)
        return write_answer(prompt, question, subtotal, temperature)

    return FunctionTarget(cashier, [prompt, temperature, tool], input_keys=["question"])


def trace_program() -> Any:
    """The same workflow with trace-opt nodes and bundles, for Trace's own OptoPrime."""
    from opto import trace

    from bench.tasks.traceopt import TraceProgram

    prompt = trace.node(
        SYSTEM_PROMPT,
        trainable=True,
        name="system_prompt",
        description="[ParameterNode] the cashier model's system prompt",
    )
    temperature = trace.node(
        TEMPERATURE,
        trainable=True,
        name="temperature",
        description="[ParameterNode] the cashier model's sampling temperature, in [0, 2]",
    )
    tool = trace.bundle(trainable=True)(order_subtotal)

    def plan_tool_call(system_prompt: str, question: str, temperature: float) -> str:
        """The model's first turn: it calls order_subtotal with the order taken from the question."""
        return plan_policy(question)

    def write_answer(system_prompt: str, question: str, tool_result: float, temperature: float) -> str:
        """The model's second turn: it reads the tool's result and writes the answer, as its system prompt says."""
        return answer_policy(system_prompt, tool_result, temperature)

    plan_op, answer_op = trace.bundle()(plan_tool_call), trace.bundle()(write_answer)

    def forward(example: dict[str, Any]) -> Any:
        question = trace.node(example["question"], name="question")
        order = plan_op(prompt, question, temperature)
        return answer_op(prompt, question, tool(order), temperature)

    def clamp(values: dict[Any, Any]) -> dict[Any, Any]:
        return {
            node: (max(TEMPERATURE_BOUNDS[0], min(TEMPERATURE_BOUNDS[1], float(v))) if node is temperature else v)
            for node, v in values.items()
        }

    return TraceProgram(forward, [prompt, temperature, tool.parameter], postprocess=clamp)


# ----- LangChain: a chain with a tool -----------------------------------------------------------------
def _compiled_tool(source: str) -> Callable[..., Any]:
    namespace: dict[str, Any] = {}
    exec(compile(source, "<order_subtotal>", "exec"), namespace)
    return namespace["order_subtotal"]


@dataclass
class Workflow:
    """A framework workflow: the object to optimize, how to run it on an example, and its parts."""

    framework: str
    obj: Any
    run: Callable[[dict[str, Any]], Any]
    parts: dict[str, Any]


def langchain_workflow() -> Workflow:
    """prompt | model.bind_tools([order_subtotal]) -> run the tool -> prompt | model | parser."""
    from langchain_core.language_models.chat_models import BaseChatModel
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.outputs import ChatGeneration, ChatResult
    from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
    from langchain_core.runnables import RunnableLambda, RunnablePassthrough
    from langchain_core.tools import StructuredTool
    from langchain_core.utils.function_calling import convert_to_openai_tool

    class RuleBasedChatModel(BaseChatModel):
        """A deterministic chat model: calls the tool once, then answers by `answer_policy`."""

        model_name: str = "rule-based-cashier"
        temperature: float = TEMPERATURE

        @property
        def _llm_type(self) -> str:
            return "rule-based-fake"

        @property
        def _identifying_params(self) -> dict[str, Any]:
            return {"model_name": self.model_name, "temperature": self.temperature}

        def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
            return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kwargs)

        def _generate(
            self, messages: list[Any], stop: Any = None, run_manager: Any = None, **kwargs: Any
        ) -> ChatResult:
            system = next((str(m.content) for m in messages if isinstance(m, SystemMessage)), "")
            results = [m for m in messages if isinstance(m, ToolMessage)]
            question = next((str(m.content) for m in reversed(messages) if isinstance(m, HumanMessage)), "")
            if kwargs.get("tools") and not results:
                message = AIMessage(
                    content="",
                    tool_calls=[
                        {"name": "order_subtotal", "id": "call_subtotal", "args": {"order": plan_policy(question)}}
                    ],
                )
            else:
                message = AIMessage(
                    content=answer_policy(system, results[-1].content if results else "", self.temperature)
                )
            return ChatResult(generations=[ChatGeneration(message=message)])

    tool = StructuredTool.from_function(order_subtotal, name="order_subtotal")  # adapters read its source
    model = RuleBasedChatModel()
    prompt = ChatPromptTemplate.from_messages(
        [("system", SYSTEM_PROMPT), ("human", "{question}"), MessagesPlaceholder("tool_messages", optional=True)]
    )

    def run_tools(state: dict[str, Any], config: Any) -> dict[str, Any]:
        ai = state["ai"]
        messages: list[Any] = [ai]
        for call in ai.tool_calls:
            messages.append(tool.invoke(call, config=config))  # a ToolCall in, a ToolMessage out
        return {"question": state["question"], "tool_messages": messages}

    chain = (
        RunnablePassthrough.assign(ai=prompt | model.bind_tools([tool]))
        | RunnableLambda(run_tools, name="run_tools")
        | prompt
        | model
        | StrOutputParser()
    )
    return Workflow(
        "langchain",
        chain,
        lambda example: chain.invoke({"question": example["question"]}),
        {"prompt": prompt, "model": model, "tool": tool},
    )


# ----- DSPy: a ReAct program -----------------------------------------------------------------------------
class RuleBasedEngine:
    """A DSPy custom engine that answers ReAct's two predictors by the same rules as the other fakes.

    It reads the requested output fields and the instructions from the system message, the
    question and trajectory from the user message, and the temperature from the request.
    """

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []

    def complete(self, request: Any) -> Any:
        from dspy.lm15 import Message, Response, TextPart
        from dspy.lm15 import Usage as LMUsage

        system = (
            request.system
            if isinstance(request.system, str)
            else "".join(getattr(p, "text", "") or "" for p in (request.system or []))
        )
        user = "\n".join(m.text or "" for m in request.messages)
        temperature = getattr(request.config, "temperature", None)
        self.requests.append({"system": system, "user": user, "temperature": temperature})
        outputs = _dspy_output_fields(system)
        fields = _dspy_fields(user.split("Respond with the corresponding output fields", 1)[0])
        question = fields.get("question", "")
        observation = fields.get("observation_0")  # the trajectory's fields are rendered inline
        instructions = system.split("your objective is:", 1)[-1]
        values: dict[str, str] = {}
        if "next_tool_name" in outputs:
            if observation is None:
                values = {
                    "next_thought": "I add up the order with the tool.",
                    "next_tool_name": "order_subtotal",
                    "next_tool_args": json.dumps({"order": plan_policy(question)}),
                }
            else:
                values = {"next_thought": "I have the subtotal.", "next_tool_name": "finish", "next_tool_args": "{}"}
        else:
            for name in outputs:
                values[name] = (
                    "The tool gave the subtotal."
                    if name == "reasoning"
                    else answer_policy(instructions, observation if observation is not None else "", temperature)
                )
        text = "\n\n".join(f"[[ ## {k} ## ]]\n{v}" for k, v in values.items()) + "\n\n[[ ## completed ## ]]"
        return Response(
            id=None,
            model="rule-based-cashier",
            message=Message.assistant([TextPart(text)]),
            finish_reason="stop",
            usage=LMUsage(input_tokens=0, output_tokens=0, total_tokens=0),
        )

    def stream(self, request: Any) -> Any:
        from dspy.lm15 import response_to_events

        return response_to_events(self.complete(request))

    def close(self) -> None:
        pass


def _dspy_fields(text: str) -> dict[str, str]:
    parts = re.split(r"\[\[ ## (\w+) ## \]\]\n?", text)
    return {parts[i]: parts[i + 1].strip() for i in range(1, len(parts) - 1, 2)}


def _dspy_output_fields(system: str) -> list[str]:
    section = system.split("Your output fields are:", 1)[-1].split("All interactions", 1)[0]
    return re.findall(r"\d+\. `(\w+)`", section)


def dspy_workflow() -> Workflow:
    """``dspy.ReAct`` with the order_subtotal tool; the LM is the rule-based engine at temperature 1.3."""
    import dspy

    signature = dspy.Signature("question -> answer", SYSTEM_PROMPT)
    tool = dspy.Tool(order_subtotal, name="order_subtotal")  # adapters read its source
    program = dspy.ReAct(signature, tools=[tool], max_iters=3)
    engine = RuleBasedEngine()
    lm = dspy.LM("fake/rule-based-cashier", engine=engine, temperature=TEMPERATURE, cache=False, num_retries=0)
    program.set_lm(lm)

    def run(example: dict[str, Any]) -> Any:
        return program(question=example["question"]).answer

    return Workflow("dspy", program, run, {"lm": lm, "engine": engine, "tool": tool})


# ----- AutoGen: a two-agent team ------------------------------------------------------------------------
def autogen_workflow() -> Workflow:
    """A clerk (with the tool) and a cashier (writes the total) in a round-robin team."""
    from autogen_agentchat.agents import AssistantAgent
    from autogen_agentchat.conditions import MaxMessageTermination
    from autogen_agentchat.teams import RoundRobinGroupChat
    from autogen_core.tools import FunctionTool

    clerk_client, cashier_client = rule_based_client("clerk", 0.0), rule_based_client("cashier", TEMPERATURE)
    tool = FunctionTool(order_subtotal, name="order_subtotal", description=order_subtotal.__doc__ or "")
    clerk = AssistantAgent(
        "clerk", model_client=clerk_client, tools=[tool], system_message=CLERK_PROMPT, reflect_on_tool_use=False
    )
    cashier = AssistantAgent(
        "cashier",
        model_client=cashier_client,
        system_message=SYSTEM_PROMPT.replace(
            "Add up the customer's order with the order_subtotal tool, then add",
            "The clerk gives you the subtotal of the customer's order; add",
        ),
    )
    team = RoundRobinGroupChat([clerk, cashier], termination_condition=MaxMessageTermination(3))

    loop = _BackgroundLoop()

    def run(example: dict[str, Any]) -> Any:
        async def go() -> Any:
            await team.reset()
            result = await team.run(task=example["question"])
            return result.messages[-1].content

        return loop.run(go())

    return Workflow(
        "autogen",
        team,
        run,
        {
            "clerk": clerk,
            "cashier": cashier,
            "tool": tool,
            "clients": {"clerk": clerk_client, "cashier": cashier_client},
        },
    )


class _BackgroundLoop:
    """One event loop in a daemon thread: an AgentChat team is bound to the loop it first ran on,
    so every run of the same team must use the same loop (one run at a time)."""

    def __init__(self) -> None:
        import threading

        self.loop = asyncio.new_event_loop()
        self.lock = threading.Lock()
        threading.Thread(target=self.loop.run_forever, daemon=True, name="bench-autogen-loop").start()

    def run(self, coroutine: Any) -> Any:
        with self.lock:
            return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()


def rule_based_client(role: str, temperature: float) -> Any:
    """An AutoGen ``ChatCompletionClient`` that follows the rules; settings live in ``_create_args``
    (where AutoGen's OpenAI client keeps them) and ``create_calls`` records each request."""
    from autogen_core import FunctionCall
    from autogen_core.models import (
        AssistantMessage,
        ChatCompletionClient,
        CreateResult,
        FunctionExecutionResultMessage,
        ModelInfo,
        RequestUsage,
        SystemMessage,
        UserMessage,
    )

    class RuleBasedChatCompletionClient(ChatCompletionClient):
        def __init__(self) -> None:
            self._create_args: dict[str, Any] = {"model": f"rule-based-{role}", "temperature": temperature}
            self.create_calls: list[dict[str, Any]] = []
            self._usage = RequestUsage(prompt_tokens=0, completion_tokens=0)

        async def create(
            self,
            messages: Any,
            *,
            tools: Any = (),
            tool_choice: Any = "auto",
            json_output: Any = None,
            extra_create_args: Any = None,
            cancellation_token: Any = None,
        ) -> CreateResult:
            args = {**self._create_args, **(extra_create_args or {})}
            self.create_calls.append({"messages": list(messages), "tools": list(tools), "args": args})
            system = "\n".join(str(m.content) for m in messages if isinstance(m, SystemMessage))
            users = [m for m in messages if isinstance(m, UserMessage)]
            question = str(users[0].content) if users else ""
            has_result = any(isinstance(m, FunctionExecutionResultMessage) for m in messages)
            if tools and not has_result:
                call = FunctionCall(
                    id="call_subtotal", name="order_subtotal", arguments=json.dumps({"order": plan_policy(question)})
                )
                return CreateResult(finish_reason="function_calls", content=[call], usage=self._usage, cached=False)
            others = [
                m
                for m in messages
                if isinstance(m, (UserMessage, AssistantMessage)) and getattr(m, "source", "user") not in ("user", role)
            ]
            tool_result = str(others[-1].content) if others else ""
            text = answer_policy(system, tool_result, args.get("temperature"))
            return CreateResult(finish_reason="stop", content=text, usage=self._usage, cached=False)

        def create_stream(self, *args: Any, **kwargs: Any) -> Any:
            async def gen() -> Any:
                yield await self.create(*args, **kwargs)

            return gen()

        async def close(self) -> None:
            pass

        def actual_usage(self) -> Any:
            return self._usage

        def total_usage(self) -> Any:
            return self._usage

        def count_tokens(self, messages: Any, *, tools: Any = ()) -> int:
            return sum(len(str(getattr(m, "content", ""))) // 4 for m in messages)

        def remaining_tokens(self, messages: Any, *, tools: Any = ()) -> int:
            return 100_000

        @property
        def capabilities(self) -> Any:  # deprecated in AgentChat, still abstract
            return {"vision": False, "function_calling": True, "json_output": False}

        @property
        def model_info(self) -> ModelInfo:
            return ModelInfo(
                vision=False, function_calling=True, json_output=False, family="unknown", structured_output=False
            )

    return RuleBasedChatCompletionClient()


FRAMEWORKS: dict[str, Callable[[], Workflow]] = {
    "langchain": langchain_workflow,
    "dspy": dspy_workflow,
    "autogen": autogen_workflow,
}
FRAMEWORK_MODULES = {"langchain": "langchain_core", "dspy": "dspy", "autogen": "autogen_agentchat"}


# ----- our adapters -------------------------------------------------------------------------------------
class AdapterUnavailable(RuntimeError):
    """Our adapter for this framework is not installed or cannot wrap the workflow (the reason says which)."""


def framework_target(workflow: Workflow) -> Any:
    """Wrap a framework workflow with our adapter (a `Target` for opto_core.engine.loop), or say why not.

    The adapter's target runs the framework object on the framework's own input (``{"question"}``
    for a chain or a DSPy program, the question text for a team); `MappedTarget` turns the task's
    examples into that input and the framework's output into the answer text the metric reads.
    """
    import importlib

    try:
        module = importlib.import_module(f"opto_adapters.{workflow.framework}")
    except ImportError as exc:
        raise AdapterUnavailable(f"opto_adapters.{workflow.framework} is not available ({exc})") from exc
    builder = getattr(module, "bench_target", None)
    try:
        if builder is not None:  # an adapter may say itself how to wrap a workflow like this one
            return builder(workflow)
        if workflow.framework == "langchain":
            return _langchain_target(module, workflow)
        if workflow.framework == "autogen":
            return _autogen_target(module, workflow)
        if workflow.framework == "dspy":
            return _dspy_target(module, workflow)
    except AdapterUnavailable:
        raise
    except Exception as exc:  # an adapter whose API differs from what this harness expects
        raise AdapterUnavailable(
            f"opto_adapters.{workflow.framework} could not wrap the workflow: {type(exc).__name__}: {exc}"
        ) from exc
    raise AdapterUnavailable(f"no adapter route for {workflow.framework}")


class MappedTarget:
    """A `Target` that maps the task's example to the framework's input and its output to the answer."""

    def __init__(self, inner: Any, input_fn: Callable[[Any], Any], output_fn: Callable[[Any], Any]) -> None:
        self.inner, self.input_fn, self.output_fn = inner, input_fn, output_fn

    def parameters(self) -> list[Parameter]:
        return self.inner.parameters()

    def run(self, example: Any) -> tuple[Any, Any]:
        output, graph = self.inner.run(self.input_fn(example))
        if isinstance(output, BaseException):
            return output, graph
        return self.output_fn(output), graph

    def apply(self, updates: dict[str, Any]) -> None:
        self.inner.apply(updates)

    def snapshot(self) -> Any:
        return self.inner.snapshot()

    def restore(self, snapshot: Any) -> None:
        self.inner.restore(snapshot)


def _answer_text(output: Any) -> Any:
    """The answer in a framework's output: a prediction's ``answer``, a team's last message, or the text."""
    if hasattr(output, "answer"):
        return output.answer
    messages = getattr(output, "messages", None)
    if messages:
        return getattr(messages[-1], "content", messages[-1])
    if isinstance(output, dict) and "answer" in output:
        return output["answer"]
    return getattr(output, "content", output)


def _question(example: Any) -> dict[str, Any]:
    return {"question": example["question"]}


def _langchain_target(module: Any, workflow: Workflow) -> Any:
    """The tool runs inside a lambda step, where no static walk of the chain can find it: its
    parameters are discovered from the chain and the tool together, as the adapter documents."""
    tool = workflow.parts["tool"]
    parameters = module.parameters_of([workflow.obj, tool])
    inner = module.ChainTarget(workflow.obj, parameters=parameters, input_keys=["question"])
    return MappedTarget(inner, _question, _answer_text)


def _autogen_target(module: Any, workflow: Workflow) -> Any:
    inner = module.wrap_team(workflow.obj, task_key="question")
    return MappedTarget(inner, _question, _answer_text)


def _dspy_target(module: Any, workflow: Workflow) -> Any:
    for name in ("ProgramTarget", "DSPyTarget", "program_target"):
        factory = getattr(module, name, None)
        if factory is not None:
            return MappedTarget(_construct(factory, workflow.obj, input_keys=["question"]), _question, _answer_text)
    raise AdapterUnavailable("opto_adapters.dspy has no ProgramTarget")


def _construct(factory: Callable[..., Any], obj: Any, **optional: Any) -> Any:
    """Call ``factory(obj, ...)`` with those of ``optional`` that its signature accepts."""
    import inspect

    try:
        accepted = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return factory(obj)
    return factory(obj, **{k: v for k, v in optional.items() if k in accepted})


def framework_available(framework: str) -> str | None:
    """None when the framework itself is installed, else the reason."""
    import importlib.util

    module = FRAMEWORK_MODULES[framework]
    return (
        None
        if importlib.util.find_spec(module) is not None
        else f"{module} is not installed (pip install 'opto-adapters[{framework}]')"
    )


def apply_reference_fix(workflow: Workflow, fix: str = "all") -> None:
    """Write the known-good values into a framework workflow directly (used by the tests to check
    that the faults are the only thing wrong: with all three fixed, every answer is right)."""
    fixes = {"prompt", "tool", "temperature"} if fix == "all" else {fix}
    fn = _compiled_tool(FIXED_TOOL)
    if workflow.framework == "langchain":
        if "prompt" in fixes:
            workflow.parts["prompt"].messages[0].prompt.template = FIXED_PROMPT
        if "tool" in fixes:
            workflow.parts["tool"].func = fn
        if "temperature" in fixes:
            workflow.parts["model"].temperature = FIXED_TEMPERATURE
    elif workflow.framework == "dspy":
        program = workflow.obj
        if "prompt" in fixes:
            for predictor in (program.react, program.extract.predict):
                predictor.signature = predictor.signature.with_instructions(
                    predictor.signature.instructions.replace("20%", "8%")
                )
        if "tool" in fixes:
            program.tools["order_subtotal"].func = fn
        if "temperature" in fixes:
            lm = workflow.parts["lm"].copy(temperature=FIXED_TEMPERATURE)
            program.set_lm(lm)
    elif workflow.framework == "autogen":
        from autogen_core.models import SystemMessage
        from autogen_core.tools import FunctionTool

        cashier, clerk = workflow.parts["cashier"], workflow.parts["clerk"]
        if "prompt" in fixes:
            cashier._system_messages = [
                SystemMessage(content=m.content.replace("20%", "8%")) for m in cashier._system_messages
            ]
        if "tool" in fixes:
            clerk._tools[0] = FunctionTool(fn, name="order_subtotal", description=order_subtotal.__doc__ or "")
        if "temperature" in fixes:
            workflow.parts["clients"]["cashier"]._create_args["temperature"] = FIXED_TEMPERATURE
