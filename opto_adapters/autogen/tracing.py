"""Recording what AgentChat agents really did: every model request/response and tool execution.

Two sources, per the notes (``shared/notes/autogen.md`` section 2):

- `RecordingClient`, a pass-through ``ChatCompletionClient`` installed in place of an agent's (or a
  selector's) model client. It sees the exact prompt (system message + context), the tools offered,
  the settings and the result of every call: the most faithful source of the graph's edges. It is
  also where write-back is checked (the next request must carry the applied values) and where the
  per-agent temperature is passed (``extra_create_args``).
- `TurnObserver`, fed with the messages an agent receives and the events/messages it yields
  (``on_messages_stream``), which gives message ids, tool-call requests and tool results.

Both write framework-neutral records into a `ConversationLog` (see `opto_core.kernel.conversation`).
"""

from __future__ import annotations

import json
import time
from typing import Any, AsyncGenerator, Callable, Mapping, Sequence

from autogen_agentchat.base import Response
from autogen_agentchat.messages import (
    BaseAgentEvent,
    BaseChatMessage,
    HandoffMessage,
    MemoryQueryEvent,
    ModelClientStreamingChunkEvent,
    ThoughtEvent,
    ToolCallExecutionEvent,
    ToolCallRequestEvent,
    ToolCallSummaryMessage,
)
from autogen_core import CancellationToken, FunctionCall
from autogen_core.models import (
    AssistantMessage,
    ChatCompletionClient,
    CreateResult,
    FunctionExecutionResultMessage,
    LLMMessage,
    ModelCapabilities,  # type: ignore[attr-defined]
    ModelInfo,
    RequestUsage,
    SystemMessage,
    UserMessage,
)
from autogen_core.tools import Tool, ToolSchema

from opto_adapters.autogen.eventloop import on_adapter_loop, renew_http_pool, stream_on_adapter_loop
from opto_core.kernel.conversation import (
    KIND_HANDOFF,
    KIND_MEMORY,
    KIND_MESSAGE,
    KIND_THOUGHT,
    KIND_TOOL_REQUEST,
    KIND_TOOL_RESULTS,
    KIND_TOOL_SUMMARY,
    ConversationLog,
    MessageRecord,
    PromptItem,
    ToolRunRecord,
    Turn,
    text_of,
)

#: (log, turn or None) of the conversation a client's next call belongs to, or None (not recording).
Session = Callable[[], "tuple[ConversationLog, Turn | None] | None"]


# ----- text forms shared by prompts and messages (so that they match) -------------------------
def content_text(content: Any) -> str:
    """The text of a model-message content: a string, or a list of strings/images/function calls."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        if content and all(isinstance(item, FunctionCall) for item in content):
            return calls_text(content)
        return "\n".join(item if isinstance(item, str) else "[image]" for item in content)
    return text_of(content)


def calls_text(calls: Sequence[FunctionCall]) -> str:
    return json.dumps([{"name": c.name, "arguments": c.arguments} for c in calls], ensure_ascii=False)


def results_text(results: Sequence[Any]) -> str:
    return json.dumps(
        [{"name": r.name, "content": r.content, **({"is_error": True} if r.is_error else {})} for r in results],
        ensure_ascii=False,
    )


def prompt_item(message: LLMMessage) -> PromptItem:
    """One request message in neutral form (role, text, source, call ids)."""
    if isinstance(message, SystemMessage):
        return PromptItem("system", message.content)
    if isinstance(message, UserMessage):
        return PromptItem("user", content_text(message.content), message.source)
    if isinstance(message, AssistantMessage):
        if isinstance(message.content, list):
            return PromptItem(
                "assistant", calls_text(message.content), message.source, tuple(c.id for c in message.content)
            )
        return PromptItem("assistant", message.content, message.source)
    if isinstance(message, FunctionExecutionResultMessage):
        return PromptItem("tool", results_text(message.content), None, tuple(r.call_id for r in message.content))
    return PromptItem("user", text_of(getattr(message, "content", message)), getattr(message, "source", None))


def _prompt(log: ConversationLog, messages: Sequence[LLMMessage]) -> list[PromptItem]:
    """The prompt items of a request. A model context hands the same message objects to every call,
    so each is converted once per run (memo keyed by identity, holding the object alive)."""
    memo = log.scratch.setdefault("prompt_items", {})
    items = []
    for message in messages:
        hit = memo.get(id(message))
        if hit is None or hit[0] is not message:
            hit = memo[id(message)] = (message, prompt_item(message))
        items.append(hit[1])
    return items


def message_record(
    message: BaseAgentEvent | BaseChatMessage, turn: int | None, *, final: bool = False
) -> MessageRecord | None:
    """A neutral record of an AgentChat message/event, or None for events that are no value
    (streaming chunks, speaker-selection notices)."""
    kind: str
    call_ids: tuple[str, ...] = ()
    if isinstance(message, ToolCallRequestEvent):
        kind, text, call_ids = KIND_TOOL_REQUEST, calls_text(message.content), tuple(c.id for c in message.content)
    elif isinstance(message, ToolCallExecutionEvent):
        kind, text = KIND_TOOL_RESULTS, results_text(message.content)
        call_ids = tuple(r.call_id for r in message.content)
    elif isinstance(message, ToolCallSummaryMessage):
        kind, text = KIND_TOOL_SUMMARY, message.content
        call_ids = tuple(r.call_id for r in message.results) or tuple(c.id for c in message.tool_calls)
    elif isinstance(message, ThoughtEvent):
        kind, text = KIND_THOUGHT, message.content
    elif isinstance(message, MemoryQueryEvent):
        kind, text, turn = KIND_MEMORY, message.to_text(), None
    elif isinstance(message, HandoffMessage):
        kind, text = KIND_HANDOFF, message.content
    elif isinstance(message, BaseChatMessage):
        kind = KIND_MESSAGE
        try:
            text = content_text(message.to_model_message().content)
        except Exception:  # a custom message type without a model form
            text = message.to_text()
    else:
        return None
    return MessageRecord(
        id=message.id,
        source=message.source,
        kind=kind,
        type=type(message).__name__,
        content=text,
        turn=turn,
        call_ids=call_ids,
        final=final,
    )


# ----- the recording model client -------------------------------------------------------------
class RecordingClient(ChatCompletionClient):
    """A pass-through model client that records every request and response of one agent.

    ``session()`` says which conversation (and turn) a call belongs to; when it returns None
    (the agent used outside a recorded run) calls pass through unrecorded. ``parameters`` (an
    `AgentParameters`) supplies the per-agent settings to send and the write-back checks.
    """

    def __init__(
        self, inner: ChatCompletionClient, *, agent: str, session: Session, parameters: Any = None, role: str = "agent"
    ) -> None:
        if isinstance(inner, RecordingClient):
            raise TypeError(f"the model client of {agent!r} is already recorded (wrapped twice?)")
        self.inner = inner
        self.agent = agent
        self.session = session
        self.parameters = parameters
        self.role = role

    # -- the recorded calls --
    def _prepare(
        self, messages: Sequence[LLMMessage], tools: Sequence[Tool | ToolSchema], extra_create_args: Mapping[str, Any]
    ) -> tuple[dict[str, Any], Any, list[str], BaseException | None]:
        extra = dict(extra_create_args)
        if self.parameters is not None:
            extra.update(self.parameters.settings_override)
        verified: list[str] = []
        error: BaseException | None = None
        if self.parameters is not None:
            try:
                verified = self.parameters.verify_request(list(messages), list(tools), extra)
            except Exception as exc:  # WriteBackError: record it as this call's failure
                error = exc
        session = self.session()
        record = None
        if session is not None:
            log, turn = session
            record = log.new_llm_call(
                agent=self.agent,
                prompt=_prompt(log, messages),
                tools=[_tool_name(t) for t in tools],
                settings=self._settings(extra),
                model=self._model_name(),
                turn=turn.index if turn else None,
                role=self.role,
                verified=verified,
            )
        return extra, record, verified, error

    @staticmethod
    def _finish(record: Any, result: CreateResult | None, error: BaseException | None) -> None:
        if record is None:
            return
        record.seconds = time.time() - record.started
        if error is not None:
            record.error = error
            return
        assert result is not None
        if isinstance(result.content, str):
            record.output = result.content
        else:
            record.output = [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in result.content]
            record.call_ids = tuple(c.id for c in result.content)
        record.usage = {
            "prompt_tokens": result.usage.prompt_tokens,
            "completion_tokens": result.usage.completion_tokens,
        }

    async def create(
        self,
        messages: Sequence[LLMMessage],
        *,
        tools: Sequence[Tool | ToolSchema] = [],
        tool_choice: Any = "auto",
        json_output: Any = None,
        extra_create_args: Mapping[str, Any] = {},
        cancellation_token: CancellationToken | None = None,
    ) -> CreateResult:
        extra, record, _, error = self._prepare(messages, tools, extra_create_args)
        if error is not None:
            self._finish(record, None, error)
            raise error
        try:
            result = await on_adapter_loop(
                self._create(  # the client's HTTP pool lives on that loop
                    messages,
                    tools=tools,
                    tool_choice=tool_choice,
                    json_output=json_output,
                    extra_create_args=extra,
                    cancellation_token=cancellation_token,
                )
            )
        except BaseException as exc:
            self._finish(record, None, exc)
            raise
        self._finish(record, result, None)
        return result

    async def create_stream(
        self,
        messages: Sequence[LLMMessage],
        *,
        tools: Sequence[Tool | ToolSchema] = [],
        tool_choice: Any = "auto",
        json_output: Any = None,
        extra_create_args: Mapping[str, Any] = {},
        cancellation_token: CancellationToken | None = None,
    ) -> AsyncGenerator[str | CreateResult, None]:
        extra, record, _, error = self._prepare(messages, tools, extra_create_args)
        if error is not None:
            self._finish(record, None, error)
            raise error
        result: CreateResult | None = None
        try:
            async for chunk in stream_on_adapter_loop(
                self._create_stream(
                    messages,
                    tools=tools,
                    tool_choice=tool_choice,
                    json_output=json_output,
                    extra_create_args=extra,
                    cancellation_token=cancellation_token,
                )
            ):
                if isinstance(chunk, CreateResult):
                    result = chunk
                yield chunk
        except BaseException as exc:
            self._finish(record, None, exc)
            raise
        if result is not None:
            self._finish(record, result, None)
        else:
            self._finish(record, None, RuntimeError("the stream ended without a final result"))

    async def _create(self, messages: Sequence[LLMMessage], **kwargs: Any) -> CreateResult:
        """The inner client's ``create``, run on the adapter's loop."""
        await renew_http_pool(self.inner)
        return await self.inner.create(messages, **kwargs)

    async def _create_stream(
        self, messages: Sequence[LLMMessage], **kwargs: Any
    ) -> AsyncGenerator[str | CreateResult, None]:
        """The inner client's ``create_stream``, iterated on the adapter's loop."""
        await renew_http_pool(self.inner)
        async for chunk in self.inner.create_stream(messages, **kwargs):
            yield chunk

    def _settings(self, extra: dict[str, Any]) -> dict[str, Any]:
        settings = {k: v for k, v in client_config(self.inner).items() if k != "model"}
        settings.update(extra)
        return {k: v for k, v in settings.items() if isinstance(v, (str, int, float, bool)) or v is None}

    def _model_name(self) -> str:
        return str(client_config(self.inner).get("model") or type(self.inner).__name__)

    # -- everything else is the inner client's --
    async def close(self) -> None:
        await self.inner.close()

    def actual_usage(self) -> RequestUsage:
        return self.inner.actual_usage()

    def total_usage(self) -> RequestUsage:
        return self.inner.total_usage()

    def count_tokens(self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = []) -> int:
        return self.inner.count_tokens(messages, tools=tools)

    def remaining_tokens(self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = []) -> int:
        return self.inner.remaining_tokens(messages, tools=tools)

    @property
    def capabilities(self) -> ModelCapabilities:  # type: ignore[override]
        return self.inner.capabilities  # type: ignore[no-any-return]

    @property
    def model_info(self) -> ModelInfo:
        return self.inner.model_info

    def dump_component(self) -> Any:
        """The inner client's config: a saved agent loads with its real client, not the recorder.

        Settings written for this agent (the optimized temperature) go into the saved config when the
        client's config has the field, so each saved agent gets its own client with its own value."""
        component = self.inner.dump_component()
        override = dict(self.parameters.settings_override) if self.parameters is not None else {}
        fields = getattr(getattr(self.inner, "component_config_schema", None), "model_fields", {})
        settable = {key: value for key, value in override.items() if key in fields}
        if settable:
            component = component.model_copy(update={"config": {**component.config, **settable}})
        return component

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("inner", "agent", "session", "parameters", "role"):
            raise AttributeError(name)
        return getattr(self.inner, name)

    def __repr__(self) -> str:
        return f"RecordingClient({self.inner!r}, agent={self.agent!r})"


def _tool_name(tool: Any) -> str:
    return tool["name"] if isinstance(tool, dict) else tool.name


#: Config fields of a model client that say where and how to connect, not what to ask: never recorded.
_CONNECTION_FIELDS = {
    "api_key",
    "base_url",
    "organization",
    "timeout",
    "max_retries",
    "default_headers",
    "model_info",
    "model_capabilities",
    "add_name_prefixes",
    "include_name_in_message",
    "azure_endpoint",
    "azure_deployment",
    "api_version",
    "azure_ad_token",
    "azure_ad_token_provider",
    "chat_completions",
}


def client_config(client: Any) -> dict[str, Any]:
    """A model client's request settings (model, temperature, max_tokens...) from its saved config
    (``dump_component()``, public); ``{}`` for a client that cannot be saved."""
    if client is None:
        return {}
    try:
        config = client.dump_component().config
    except Exception:  # a client that is no component: its settings are unknown
        return {}
    return {k: v for k, v in config.items() if k not in _CONNECTION_FIELDS}


# ----- observing an agent's turn ---------------------------------------------------------------
class TurnObserver:
    """Turns what one agent receives and yields during one turn into records of the log."""

    def __init__(self, log: ConversationLog, agent: str, turn: Turn) -> None:
        self.log = log
        self.agent = agent
        self.turn = turn
        self.arguments: dict[str, str] = {}  # tool call id -> arguments (JSON text)
        self.seen: set[str] = set()  # ids observed in this turn (Response repeats its inner messages)

    def incoming(self, messages: Sequence[BaseChatMessage]) -> None:
        """Messages handed to the agent: new to the log only if no recorded agent produced them."""
        for message in messages:
            record = message_record(message, None)
            if record is not None:
                self.log.add_message(record)

    def observe(self, item: BaseAgentEvent | BaseChatMessage | Response) -> None:
        if isinstance(item, Response):
            for inner in item.inner_messages or []:  # normally seen already (same ids)
                self.observe(inner)
            self._message(item.chat_message, final=True)
            return
        if isinstance(item, ModelClientStreamingChunkEvent) or item.id in self.seen:
            return
        self.seen.add(item.id)
        if isinstance(item, ToolCallRequestEvent):
            for call in item.content:
                self.arguments[call.id] = call.arguments
        if isinstance(item, ToolCallExecutionEvent):
            for result in item.content:
                self.log.add_tool_run(
                    ToolRunRecord(
                        agent=self.agent,
                        turn=self.turn.index,
                        call_id=result.call_id,
                        name=result.name,
                        arguments=self.arguments.get(result.call_id, ""),
                        result=result.content,
                        is_error=bool(result.is_error),
                    )
                )
        self._message(item, final=False)

    def _message(self, message: BaseAgentEvent | BaseChatMessage, *, final: bool) -> None:
        record = message_record(message, self.turn.index if message.source == self.agent else None, final=final)
        if record is not None:
            self.log.add_message(record)
