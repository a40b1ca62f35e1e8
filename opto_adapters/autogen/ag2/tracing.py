"""Recording classic AutoGen (AG2) conversations: AG2 events -> `opto_core.kernel.conversation` records.

Two public AG2 seams, no patching:

- **Model calls** reach AG2's runtime logger (`autogen.runtime_logging.start(logger=...)`), which
  `OpenAIWrapper.create` calls after every response (and on an `APIError`) with the calling agent,
  the exact request (messages, tools, temperature: what goes over the wire) and the response.
  The logger is process-global, so one `_Relay` is installed while at least one conversation is
  being recorded (a reference count under a lock) and removed after the last; a logger the user
  had started keeps receiving every call, and is put back afterwards.
- **Messages and tool runs** come from each agent's ``process_message_before_send`` hook: every
  message an agent sends, with sender and recipient. A tool run is read from the executor's
  ``tool_responses`` message, linked by ``tool_call_id`` to the caller's ``tool_calls`` request.

A GroupChat's "auto" speaker selection runs a fresh internal agent named
``speaker_selection_agent``; its calls are recorded as selector calls of the group's manager.
"""

from __future__ import annotations

import contextvars
import datetime
import threading
import time
from typing import Any, Callable, Iterable

from autogen import runtime_logging
from autogen.logger.base_logger import BaseLogger

from opto_core.kernel.conversation import (
    KIND_MESSAGE,
    KIND_TOOL_REQUEST,
    KIND_TOOL_RESULTS,
    ConversationLog,
    MessageRecord,
    PromptItem,
    ToolRunRecord,
    Turn,
    text_of,
)

#: The name AG2 gives the internal agent of "auto" speaker selection (groupchat.py, _create_internal_agents).
SELECTOR_AGENT = "speaker_selection_agent"
#: Request keys recorded as the call's settings.
SETTING_KEYS = (
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "presence_penalty",
    "frequency_penalty",
    "seed",
)
#: AG2's `execute_function` reports a failed tool as content starting with this (it catches the exception).
TOOL_ERROR_PREFIX = "Error: "

Check = Callable[[dict[str, Any]], bool]


class Recording:
    """One conversation being recorded: turns the AG2 events into records of a `ConversationLog`.

    ``selector_name`` names speaker-selection calls (the manager's name); ``checks`` maps a
    parameter name to (agent, request -> bool): a written value the next request must show.
    """

    def __init__(
        self, name: str, *, selector_name: str | None = None, checks: dict[str, tuple[str, Check]] | None = None
    ) -> None:
        self.log = ConversationLog("chat", name)
        self.selector_name = selector_name or SELECTOR_AGENT
        self.checks = dict(checks or {})
        self._open: dict[str, Turn] = {}  # agent -> its turn in progress
        self._partner: dict[str, str] = {}  # agent -> who last sent it a message
        self._requests: dict[str, tuple[str, str]] = {}  # tool call id -> (tool name, arguments)
        self._ids = 0
        self._lock = threading.Lock()

    # ----- model calls (from the runtime logger) --------------------------------------------------
    def on_llm_call(self, source: Any, request: dict[str, Any], response: Any, start_time: str) -> None:
        agent = getattr(source, "name", None) or str(source)
        selector = agent == SELECTOR_AGENT
        role = "selector" if selector else "agent"
        turn = None if selector else self._turn(agent).index
        messages = request.get("messages") or []
        prompt = [self._prompt_item(agent, m) for m in messages]
        tools = [t.get("function", {}).get("name", "") for t in request.get("tools") or []]
        settings = {k: request[k] for k in SETTING_KEYS if request.get(k) is not None}
        output, call_ids, usage, error = _response(response)
        verified = [
            name
            for name, (owner, check) in list(self.checks.items())
            if owner == (self.selector_name if selector else agent) and _safe(check, request)
        ]
        for name in verified:
            self.checks.pop(name, None)
        started = _timestamp(start_time)
        self.log.new_llm_call(
            agent=self.selector_name if selector else agent,
            prompt=prompt,
            tools=tools,
            settings=settings,
            model=str(request.get("model", "")),
            turn=turn,
            role=role,
            output=output,
            call_ids=call_ids,
            usage=usage,
            error=error,
            seconds=max(time.time() - started, 0.0) if started else 0.0,
            verified=verified,
        )

    def _prompt_item(self, agent: str, message: dict[str, Any]) -> PromptItem:
        role = message.get("role", "user")
        if role == "system":
            source = None
        elif role == "assistant":
            source = message.get("name") or agent
        else:
            source = message.get("name") or self._partner.get(agent)
        call_ids: tuple[str, ...] = ()
        if message.get("tool_calls"):
            call_ids = tuple(c.get("id", "") for c in message["tool_calls"])
        elif message.get("tool_call_id"):
            call_ids = (message["tool_call_id"],)
        return PromptItem(role, _text(message.get("content")), source, call_ids)

    # ----- messages and tool runs (from the agents' hooks) ------------------------------------------
    def on_send(self, sender: Any, message: Any, recipient: Any) -> None:
        name = sender.name
        self._partner[recipient.name] = name
        body = {"content": message} if isinstance(message, str) else dict(message or {})
        call_ids: tuple[str, ...] = ()
        if body.get("tool_calls"):
            kind, kind_type = KIND_TOOL_REQUEST, "tool_calls"
            call_ids = tuple(c.get("id", "") for c in body["tool_calls"])
            for call in body["tool_calls"]:
                function = call.get("function") or {}
                self._requests[call.get("id", "")] = (function.get("name", ""), str(function.get("arguments", "")))
        elif body.get("tool_responses"):
            kind, kind_type = KIND_TOOL_RESULTS, "tool_responses"
            call_ids = tuple(r.get("tool_call_id", "") for r in body["tool_responses"])
        else:
            kind, kind_type = KIND_MESSAGE, "text"
        turn = self._open.get(name)
        if turn is None and kind == KIND_TOOL_RESULTS:
            turn = self._turn(name)
        if kind == KIND_TOOL_RESULTS:
            for response in body["tool_responses"]:
                call_id = response.get("tool_call_id", "")
                tool, arguments = self._requests.get(call_id, ("", ""))
                result = _text(response.get("content"))
                self.log.add_tool_run(
                    ToolRunRecord(
                        name,
                        turn.index if turn else None,
                        call_id,
                        tool,
                        arguments,
                        result,
                        is_error=result.startswith(TOOL_ERROR_PREFIX),
                    )
                )
        with self._lock:
            self._ids += 1
            message_id = f"{self.log.run_id}-{self._ids}"
        self.log.add_message(
            MessageRecord(
                message_id,
                name,
                kind,
                kind_type,
                _text(body.get("content")),
                turn=turn.index if turn else None,
                call_ids=call_ids,
                final=True,
            )
        )
        if turn is not None:
            self.log.end_turn(turn)
            self._open.pop(name, None)

    def _turn(self, agent: str) -> Turn:
        turn = self._open.get(agent)
        if turn is None:
            turn = self._open[agent] = self.log.begin_turn(agent)
        return turn

    def finish(self, error: BaseException | None = None) -> None:
        for turn in list(self._open.values()):
            self.log.end_turn(turn, error)
        self._open.clear()
        self.log.finish(error)


# ----- the process-global logger ---------------------------------------------------------------
_CURRENT: contextvars.ContextVar[Recording | None] = contextvars.ContextVar("opto_ag2_recording", default=None)
_BY_AGENT: dict[int, Recording] = {}  # id(agent) -> the recording it takes part in
_ACTIVE: list[Recording] = []
_STATE_LOCK = threading.RLock()
_INSTALLED: dict[str, Any] = {}  # "relay", "previous", "previous_on"


def recording_for(source: Any) -> Recording | None:
    """The recording an AG2 event belongs to: by its agent, else this thread's, else the only one."""
    found = _BY_AGENT.get(id(source))
    if found is None:
        found = _CURRENT.get()
    if found is None and len(_ACTIVE) == 1:
        found = _ACTIVE[0]
    return found


class _Relay(BaseLogger):
    """AG2 runtime logger that hands model calls to the active recordings and forwards everything
    to the logger the user had started (if any)."""

    def __init__(self, previous: BaseLogger | None) -> None:
        self.previous = previous

    def start(self) -> str:
        return "opto-ag2"

    def log_chat_completion(
        self,
        invocation_id: Any,
        client_id: int,
        wrapper_id: Any,
        source: Any,
        request: dict[str, Any],
        response: Any,
        is_cached: int,
        cost: float,
        start_time: str,
    ) -> None:
        recording = recording_for(source)
        if recording is not None:
            recording.on_llm_call(source, request, response, start_time)
        if self.previous is not None:
            self.previous.log_chat_completion(
                invocation_id, client_id, wrapper_id, source, request, response, is_cached, cost, start_time
            )

    def log_new_agent(self, agent: Any, init_args: dict[str, Any]) -> None:
        if self.previous is not None:
            self.previous.log_new_agent(agent, init_args)

    def log_event(self, source: Any, name: str, **kwargs: Any) -> None:
        if self.previous is not None:
            self.previous.log_event(source, name, **kwargs)

    def log_new_wrapper(self, wrapper: Any, init_args: Any) -> None:
        if self.previous is not None:
            self.previous.log_new_wrapper(wrapper, init_args)

    def log_new_client(self, client: Any, wrapper: Any, init_args: dict[str, Any]) -> None:
        if self.previous is not None:
            self.previous.log_new_client(client, wrapper, init_args)

    def log_function_use(self, source: Any, function: Any, args: dict[str, Any], returns: Any) -> None:
        if self.previous is not None:
            self.previous.log_function_use(source, function, args, returns)

    def stop(self) -> None:
        pass

    def get_connection(self) -> Any:
        return self.previous.get_connection() if self.previous is not None else None


def _install() -> None:
    previous = runtime_logging.autogen_logger if runtime_logging.logging_enabled() else None
    relay = _Relay(previous)
    _INSTALLED.update(relay=relay, previous=runtime_logging.autogen_logger, previous_on=previous is not None)
    runtime_logging.start(logger=relay)


def _uninstall() -> None:
    relay = _INSTALLED.pop("relay", None)
    previous, was_on = _INSTALLED.pop("previous", None), _INSTALLED.pop("previous_on", False)
    if relay is None or runtime_logging.autogen_logger is not relay:
        return  # someone started another logger meanwhile: leave theirs alone
    # Put the user's logger back as it was. AG2 has no public "swap logger" (start() would call the
    # logger's start() again and open a new session), so its two module globals are restored here.
    runtime_logging.autogen_logger = previous
    runtime_logging.is_logging = was_on


def begin(recording: Recording, agents: Iterable[Any]) -> contextvars.Token:
    """Start routing the events of ``agents`` (and of this thread) to ``recording``."""
    with _STATE_LOCK:
        if not _ACTIVE:
            _install()
        _ACTIVE.append(recording)
        for agent in agents:
            _BY_AGENT[id(agent)] = recording
    return _CURRENT.set(recording)


def end(recording: Recording, agents: Iterable[Any], token: contextvars.Token) -> None:
    _CURRENT.reset(token)
    with _STATE_LOCK:
        for agent in agents:
            if _BY_AGENT.get(id(agent)) is recording:
                del _BY_AGENT[id(agent)]
        if recording in _ACTIVE:
            _ACTIVE.remove(recording)
        if not _ACTIVE:
            _uninstall()


def is_installed() -> bool:
    return "relay" in _INSTALLED


# ----- the hook ---------------------------------------------------------------------------------
def on_send_hook(sender: Any, message: Any, recipient: Any, silent: bool) -> Any:
    """AG2 ``process_message_before_send`` hook: records, never changes the message."""
    recording = _BY_AGENT.get(id(sender))
    if recording is not None:
        recording.on_send(sender, message, recipient)
    return message


def attach(agent: Any) -> None:
    """Register the recording hook on an agent once (it records only while a conversation is recorded)."""
    hooks = agent.hook_lists["process_message_before_send"]
    if on_send_hook not in hooks:
        agent.register_hook("process_message_before_send", on_send_hook)


def detach(agent: Any) -> None:
    hooks = agent.hook_lists["process_message_before_send"]
    if on_send_hook in hooks:
        hooks.remove(on_send_hook)


# ----- helpers ------------------------------------------------------------------------------------
def _text(content: Any) -> str:
    return "" if content is None else text_of(content)


def _response(response: Any) -> tuple[Any, tuple[str, ...], dict[str, int], BaseException | None]:
    if isinstance(response, str):  # AG2 logs an APIError as a string
        return None, (), {}, RuntimeError(f"model call failed: {response}")
    try:
        message = response.choices[0].message
    except (AttributeError, IndexError):
        return text_of(response), (), {}, None
    usage = getattr(response, "usage", None)
    tokens = (
        {
            "prompt_tokens": int(getattr(usage, "prompt_tokens", 0) or 0),
            "completion_tokens": int(getattr(usage, "completion_tokens", 0) or 0),
        }
        if usage
        else {}
    )
    calls = getattr(message, "tool_calls", None)
    if calls:
        output = [{"id": c.id, "name": c.function.name, "arguments": c.function.arguments} for c in calls]
        return output, tuple(c.id for c in calls), tokens, None
    return message.content or "", (), tokens, None


def _timestamp(text: str) -> float:
    try:
        return (
            datetime.datetime.strptime(text, "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=datetime.timezone.utc).timestamp()
        )
    except (TypeError, ValueError):
        return 0.0


def _safe(check: Check, request: dict[str, Any]) -> bool:
    try:
        return bool(check(request))
    except Exception:
        return False
