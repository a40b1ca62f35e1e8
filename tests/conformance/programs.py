"""Each adapter's small real program for the conformance suite, built against a scripted model server.

Every factory takes the server's base URL (OpenAI-compatible, on 127.0.0.1) and builds a fresh
program the framework's own way; only the model is fake. A fresh process imports these factories
to deploy saved values (`opto_core.testing.conformance.values_deploy_in_a_fresh_process`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from opto_core import FunctionTarget, OpenAIChat, Parameter, op
from opto_core.kernel.binding import BoundParameters
from opto_core.kernel.values import apply_saved

MODEL = "scripted"
KEY = "sk-scripted-not-a-secret"


# ----- plain Python (the core's own tracer) ------------------------------------------------------
@dataclass
class PlainProgram:
    """A function that asks a model, with its prompt and temperature as `Parameter`s."""

    fn: Any
    parameters: list[Parameter]


def plain_program(base_url: str) -> PlainProgram:
    system = Parameter("system", "text", "Answer in one word.", description="the system message")
    temperature = Parameter("temperature", "float", 0.0, lower=0.0, upper=2.0, description="sampling temperature")
    client = OpenAIChat(base_url, KEY, MODEL, max_retries=0)

    @op
    def ask(question: str, system: str, temperature: float) -> str:
        """Ask the model the question under the system message."""
        messages = [{"role": "system", "content": system}, {"role": "user", "content": question}]
        return client.chat(messages, temperature=temperature).text

    def answer(question: str) -> str:
        return ask(question, system, temperature)

    return PlainProgram(answer, [system, temperature])


def plain_target(program: PlainProgram) -> FunctionTarget:
    return FunctionTarget(program.fn, program.parameters)


def plain_bound(program: PlainProgram, *, include: Any = None, exclude: Any = None) -> BoundParameters:
    return BoundParameters(program.parameters, include=include, exclude=exclude)


def plain_apply_values(program: PlainProgram, values: Any) -> dict[str, Any]:
    return apply_saved(plain_bound(program), values, framework="python")


def plain_native(program: PlainProgram, example: dict[str, Any]) -> str:
    return program.fn(**example)


# ----- LangChain ---------------------------------------------------------------------------------
def langchain_program(base_url: str) -> Any:
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate
    from langchain_openai import ChatOpenAI

    prompt = ChatPromptTemplate.from_messages([("system", "Answer in one word."), ("human", "{question}")])
    model = ChatOpenAI(model=MODEL, base_url=base_url, api_key=KEY, temperature=0.0, max_retries=0)
    return prompt | model | StrOutputParser()


def langchain_native(chain: Any, example: dict[str, Any]) -> str:
    return chain.invoke(example)


# ----- DSPy --------------------------------------------------------------------------------------
class DSPyProgram:
    """A ``dspy.Predict`` with its own LM (the scripted server, DSPy's disk cache off)."""

    def __init__(self, base_url: str) -> None:
        import dspy

        self.lm = dspy.LM(f"openai/{MODEL}", api_base=base_url, api_key=KEY, cache=False, num_retries=0)
        self.predict = dspy.Predict("question -> answer")
        self.predict.lm = self.lm


def dspy_program(base_url: str) -> Any:
    return DSPyProgram(base_url).predict


def dspy_reply(request: dict[str, Any]) -> str:
    """DSPy's ChatAdapter format: the answer field, then the completion marker."""
    text = str((request.get("messages") or [{}])[-1].get("content") or "")
    return f"[[ ## answer ## ]]\nok {len(text)}\n\n[[ ## completed ## ]]"


def dspy_target(program: Any) -> Any:
    from opto_adapters.dspy import ProgramTarget

    return ProgramTarget(program)


def dspy_native(program: Any, example: dict[str, Any]) -> str:
    return program(**example).answer


def dspy_output(output: Any) -> str:
    return str(getattr(output, "answer", output))


# ----- AutoGen AgentChat -------------------------------------------------------------------------
MODEL_INFO = {
    "function_calling": True,
    "vision": False,
    "json_output": False,
    "family": "unknown",
    "structured_output": False,
}


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def agentchat_program(base_url: str) -> Any:
    from autogen_agentchat.agents import AssistantAgent
    from autogen_ext.models.openai import OpenAIChatCompletionClient

    client = OpenAIChatCompletionClient(
        model=MODEL, base_url=base_url, api_key=KEY, model_info=MODEL_INFO, temperature=0.0, max_retries=0
    )
    return AssistantAgent("bot", client, tools=[add], system_message="Answer in one word.", reflect_on_tool_use=False)


def agentchat_reply(request: dict[str, Any]) -> Any:
    """The model asks for ``add(2, 2)`` (the agent answers with the tool's result), so its tool is used."""
    from opto_core.testing import tool_call

    return tool_call("add", call_id="call_add", a=2, b=2)


def agentchat_target(agent: Any) -> Any:
    from opto_adapters.autogen import AgentTarget

    return AgentTarget(agent)


def agentchat_native(agent: Any, example: dict[str, Any]) -> str:
    result = asyncio.run(agent.run(task=example["task"]))
    return result.messages[-1].content


# ----- classic AutoGen (AG2) ---------------------------------------------------------------------
@dataclass
class AG2Program:
    assistant: Any
    user: Any

    def chat(self, example: dict[str, Any]) -> str:
        result = self.user.initiate_chat(self.assistant, message=example["task"], max_turns=1, silent=True)
        return str(result.chat_history[-1]["content"])


def ag2_program(base_url: str) -> AG2Program:
    from autogen import ConversableAgent

    llm_config = {
        "config_list": [{"model": MODEL, "base_url": base_url, "api_key": KEY}],
        "cache_seed": None,
        "temperature": 0.0,
    }
    assistant = ConversableAgent(
        "assistant", system_message="Answer in one word.", llm_config=llm_config, human_input_mode="NEVER"
    )
    user = ConversableAgent("user", llm_config=False, human_input_mode="NEVER")
    return AG2Program(assistant, user)


def ag2_target(program: AG2Program) -> Any:
    from opto_adapters.autogen.ag2 import AG2Target

    return AG2Target(program.chat, [program.assistant, program.user])


def ag2_bound(program: AG2Program, **options: Any) -> BoundParameters:
    from opto_adapters.autogen.ag2 import bound_parameters

    return bound_parameters([program.assistant, program.user], **options)


def ag2_apply_values(program: AG2Program, values: Any) -> dict[str, Any]:
    from opto_adapters.autogen.ag2 import apply_values

    return apply_values([program.assistant, program.user], values)


def ag2_native(program: AG2Program, example: dict[str, Any]) -> str:
    return program.chat(example)
