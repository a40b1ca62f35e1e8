"""`Gateway`: an OpenAI-compatible proxy that records model traffic and rewrites requests on the fly.

    gateway = Gateway("https://api.openai.com/v1", api_key=os.environ["OPENAI_API_KEY"])
    gateway.parameters.prompt("writer", "You are a concise technical writer.")
    with gateway:                       # serves on 127.0.0.1, a free port
        run_program(base_url=gateway.base_url)
    graph = gateway.graph(gateway.runs[-1].id)

Requests to ``.../chat/completions`` and ``.../responses`` are parsed (`opto_core.gateway.wire`),
rewritten with the current parameter values (`opto_core.gateway.parameters`), forwarded, and recorded
with their answers (`opto_core.gateway.recording`); a streamed answer is passed on chunk by chunk as it
arrives and assembled for the record on the side. Every other path (``/v1/models``, embeddings, ...)
is forwarded untouched and not recorded.

Failures, never hidden and never invented:

- the upstream answers with an error (status >= 400): the program gets exactly that answer; the
  exchange is recorded as an infrastructure failure;
- the upstream does not answer (refused, timed out): the program gets a 502 in OpenAI's error shape
  naming the (scrubbed) upstream; recorded as an infrastructure failure;
- a request body the gateway cannot parse: forwarded byte for byte, recorded as opaque, and one
  warning (the first time) says so.

Secrets: with ``api_key`` (or ``OPTO_UPSTREAM_API_KEY``) the gateway replaces the program's
``Authorization`` header with the real key, so the program can run with a dummy key; without one it
passes the program's header on. Neither is ever logged or recorded, and the upstream URL is scrubbed
(`opto_core.kernel.redact`) wherever it is shown.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import socket
import threading
import time
import uuid
from typing import Any, AsyncIterator, Iterator

from opto_core.gateway.recording import INFRASTRUCTURE, OK, OPAQUE, Exchange, Recorder, Run, valid_run_id
from opto_core.gateway.wire import NotUnderstood, StreamAssembler, api_of, parse_answer, parse_request
from opto_core.kernel.graph import Graph
from opto_core.kernel.redact import scrub_url

log = logging.getLogger("opto.gateway")

#: The header a program may send to name its run (see `opto_core.gateway.recording`).
RUN_HEADER = "x-opto-run"
#: The path prefix `GatewayTarget` puts in each run's base URL: ``/run/<id>/v1``.
RUN_PREFIX = "/run/"
#: Request headers never forwarded: hop-by-hop, the body's framing (re-computed), ours.
_DROP_REQUEST = {
    "host",
    "content-length",
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "upgrade",
    "proxy-authorization",
    "proxy-connection",
    "accept-encoding",
}
#: Answer headers never passed back: the body is decoded and re-framed by the gateway.
_DROP_ANSWER = {"content-length", "content-encoding", "transfer-encoding", "connection", "keep-alive"}
#: The key a program is given when the gateway holds the real one.
DUMMY_KEY = "opto-gateway"


class Gateway:
    """The recording, rewriting proxy (see the module docstring).

    ``upstream`` is the real endpoint's base URL (``https://api.openai.com/v1``, a local server...);
    requests to ``<gateway>/v1/chat/completions`` go to ``<upstream>/chat/completions``.
    ``parameters`` (a `TrafficParameters`) holds the prompts and settings the gateway rewrites;
    ``values`` (a path or dict, ``opto-values/1``) loads saved values into it. ``host`` is loopback
    unless you say otherwise; ``port=0`` picks a free port. ``record_dir`` keeps every run on disk;
    ``run_gap`` is the idle time that ends a window run; ``keep_runs`` bounds the runs kept in memory.
    """

    def __init__(
        self,
        upstream: str,
        *,
        api_key: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        parameters: Any = None,
        values: Any = None,
        record_dir: str | None = None,
        run_gap: float = 10.0,
        keep_runs: int = 200,
        timeout: float = 600.0,
    ) -> None:
        from opto_core.gateway.parameters import TrafficParameters

        if not upstream or "://" not in upstream:
            raise ValueError(
                f"upstream must be the base URL of an OpenAI-compatible endpoint "
                f"(e.g. https://api.openai.com/v1), got {scrub_url(upstream)!r}"
            )
        self.upstream = upstream.rstrip("/")
        self._api_key = api_key if api_key is not None else os.environ.get("OPTO_UPSTREAM_API_KEY") or None
        self.host, self.port = host, port
        self.timeout = timeout
        self.parameters = parameters if parameters is not None else TrafficParameters()
        if values is not None:
            self.parameters.load_values(values)
        self.recorder = Recorder(run_gap=run_gap, keep_runs=keep_runs, record_dir=record_dir, on_close=self._run_closed)
        self.app = self._build_app()
        self._client: Any = None
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self._warned: set[str] = set()
        self._warn_lock = threading.Lock()

    # ----- lifecycle --------------------------------------------------------------------------------
    def start(self) -> Gateway:
        """Serve in a background thread; returns once the port is listening."""
        if self._thread is not None:
            return self
        self.bind()
        ready = threading.Event()
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._serve(ready)), name="opto-gateway", daemon=True
        )
        self._thread.start()
        if not ready.wait(30):
            raise RuntimeError("the gateway did not start within 30 s")
        return self

    def serve_forever(self) -> None:
        """Serve in this thread until Ctrl-C (``opto gateway``)."""
        self.bind()
        try:
            asyncio.run(self._serve(threading.Event()))
        finally:
            self.recorder.close_lapsed(all_windows=True)

    def stop(self) -> None:
        """Stop serving; open window runs are closed (and their warnings given)."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(30)
            self._thread = None
        self._server = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        self.recorder.close_lapsed(all_windows=True)

    def __enter__(self) -> Gateway:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def bind(self) -> None:
        """Open the listening socket now (``port`` is then known, even when it was 0)."""
        if self._socket is None:
            self._socket = self._bind()

    def _bind(self) -> socket.socket:
        if self.host not in ("127.0.0.1", "localhost", "::1"):
            log.warning(
                "the gateway listens on %s: anyone who can reach it can use the upstream through it "
                "(and the key it holds, if any)",
                self.host,
            )
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY on each accepted connection only for sockets that say
        # so; without it every answer (headers, then body) waits for the client's delayed ACK (~40 ms)
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((self.host, self.port))
        sock.listen(2048)  # connections queue from now on, before the server loop runs
        self.port = sock.getsockname()[1]
        return sock

    async def _serve(self, ready: threading.Event) -> None:
        import uvicorn

        config = uvicorn.Config(self.app, log_level="warning", lifespan="off", access_log=False, timeout_keep_alive=30)
        self._server = server = uvicorn.Server(config)
        janitor = asyncio.ensure_future(self._close_lapsed_runs())
        watcher = asyncio.ensure_future(self._signal_ready(server, ready))
        try:
            assert self._socket is not None, "bind() first"
            await server.serve(sockets=[self._socket])
        finally:
            janitor.cancel()
            watcher.cancel()
            if self._client is not None:
                await self._client.aclose()
                self._client = None

    @staticmethod
    async def _signal_ready(server: Any, ready: threading.Event) -> None:
        while not server.started:
            await asyncio.sleep(0.005)
        ready.set()

    async def _close_lapsed_runs(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.recorder.close_lapsed()

    @property
    def holds_key(self) -> bool:
        """Whether the gateway puts the real upstream key on requests (programs may then use a dummy)."""
        return bool(self._api_key)

    # ----- addresses and runs -----------------------------------------------------------------------
    @property
    def url(self) -> str:
        """The gateway's root, e.g. ``http://127.0.0.1:8411``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        """What to give a program as ``OPENAI_BASE_URL``: ``<url>/v1``."""
        return f"{self.url}/v1"

    def run_url(self, run_id: str) -> str:
        """A base URL whose requests all belong to run ``run_id``: ``<url>/run/<id>/v1``."""
        if not valid_run_id(run_id):
            raise ValueError(f"run ids are letters, digits and _.:- (at most 128), got {run_id!r}")
        return f"{self.url}{RUN_PREFIX}{run_id}/v1"

    @contextlib.contextmanager
    def open_run(self, run_id: str | None = None) -> Iterator[str]:
        """Group requests into one run while the block runs; the run closes at its end."""
        run_id = run_id or uuid.uuid4().hex[:12]
        self.recorder.open(run_id)
        try:
            yield run_id
        finally:
            self.recorder.settle(run_id)  # a stream the client stopped reading at [DONE] is recorded first
            self.recorder.close(run_id)

    @property
    def runs(self) -> list[Run]:
        """Recorded runs (the latest ``keep_runs``), oldest first."""
        return self.recorder.runs()

    def run(self, run_id: str) -> Run:
        found = self.recorder.get(run_id)
        if found is None:
            raise KeyError(f"no recorded run {run_id!r}; recorded: {[r.id for r in self.runs][-10:]}")
        return found

    def graph(self, run_id: str, **meta: Any) -> Graph:
        """The OPTO graph of one recorded run (`opto_core.gateway.graphs.graph_of_run`)."""
        from opto_core.gateway.graphs import graph_of_run

        self.recorder.settle(run_id)

        return graph_of_run(self.run(run_id), self.parameters, meta=meta)

    def warn_once(self, key: str, message: str, *args: Any) -> None:
        with self._warn_lock:
            if key in self._warned:
                return
            self._warned.add(key)
        log.warning(message, *args)

    def _run_closed(self, run: Run) -> None:
        for message in self.parameters.unmatched_after(run):
            self.warn_once(f"unmatched:{message[0]}", "%s", message[1])

    # ----- the ASGI app -----------------------------------------------------------------------------
    def _build_app(self) -> Any:
        from starlette.applications import Starlette
        from starlette.routing import Route

        return Starlette(
            routes=[
                Route(
                    "/{path:path}", self._handle, methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"]
                )
            ]
        )

    def _http(self) -> Any:
        if self._client is None:
            import httpx

            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.timeout, connect=10.0),
                limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
            )
        return self._client

    def _upstream_headers(self, request: Any) -> dict[str, str]:
        headers = {k: v for k, v in request.headers.items() if k not in _DROP_REQUEST and not k.startswith("x-opto-")}
        if self._api_key:
            headers["authorization"] = f"Bearer {self._api_key}"
        return headers

    async def _handle(self, request: Any) -> Any:
        path, run_id = _split_run(request.url.path)
        api = api_of(path) if request.method == "POST" else None
        url = self.upstream + (path[3:] if path.startswith("/v1/") or path == "/v1" else path)
        if request.url.query:
            url += "?" + request.url.query
        content = await request.body()
        headers = self._upstream_headers(request)
        if api is None:
            return await self._forward(request.method, url, headers, content, None)
        explicit = run_id or request.headers.get(RUN_HEADER) or None
        if explicit is not None and not valid_run_id(explicit):
            explicit = None
        client = f"{request.client.host}" if request.client else ""
        run = self.recorder.run_for(explicit, client)
        exchange = Exchange(next(_EXCHANGE_IDS), run.id, api, path, time.time())
        self.recorder.started(exchange)
        try:
            body = json.loads(content)
            wire = parse_request(api, body)
        except (ValueError, NotUnderstood) as exc:
            exchange.outcome, exchange.error = OPAQUE, f"{type(exc).__name__}: {exc}"
            self.warn_once(
                "opaque",
                "opto gateway: a request to %s could not be parsed (%s); it was forwarded "
                "untouched and recorded as opaque (said once; later ones are counted in the runs)",
                path,
                exchange.error,
            )
            return await self._forward(request.method, url, headers, content, exchange)
        original = content
        try:
            rewrite = self.parameters.rewrite(api, body, wire)
        except Exception as exc:  # a rule that cannot apply must never break the program's request
            self.warn_once(
                f"rewrite:{type(exc).__name__}",
                "opto gateway: the values could not be applied to a "
                "request to %s (%s: %s); it was forwarded as the program sent it",
                path,
                type(exc).__name__,
                exc,
            )
            body = json.loads(original)
        else:
            exchange.applied, exchange.agent, exchange.positions = rewrite.applied, rewrite.agent, rewrite.positions
            if rewrite.changed:
                content = json.dumps(body, ensure_ascii=False).encode()
        exchange.request, exchange.stream = body, wire.stream
        return await self._forward(request.method, url, headers, content, exchange)

    async def _forward(
        self, method: str, url: str, headers: dict[str, str], content: bytes, exchange: Exchange | None
    ) -> Any:
        import httpx
        from starlette.responses import Response, StreamingResponse

        client = self._http()
        try:
            upstream = await client.send(
                client.build_request(method, url, headers=headers, content=content), stream=True
            )
        except httpx.HTTPError as exc:
            message = f"opto gateway: the upstream {scrub_url(self.upstream)} did not answer: {type(exc).__name__}"
            if exchange is not None:
                self._finish(exchange, 502, None, INFRASTRUCTURE, message)
            return Response(
                json.dumps({"error": {"message": message, "type": "upstream_unreachable", "code": "bad_gateway"}}),
                status_code=502,
                media_type="application/json",
            )
        answer_headers = {k: v for k, v in upstream.headers.items() if k not in _DROP_ANSWER}
        streaming = "text/event-stream" in upstream.headers.get("content-type", "")
        if exchange is None or not streaming or upstream.status_code >= 400 or exchange.outcome == OPAQUE:
            try:
                data = await upstream.aread()
            finally:
                await upstream.aclose()
            if exchange is not None:
                self._finish_body(exchange, upstream.status_code, data, streaming)
            return Response(data, status_code=upstream.status_code, headers=answer_headers)
        assembler = StreamAssembler(exchange.api)
        return StreamingResponse(
            self._relay(upstream, assembler, exchange), status_code=upstream.status_code, headers=answer_headers
        )

    async def _relay(self, upstream: Any, assembler: StreamAssembler, exchange: Exchange) -> AsyncIterator[bytes]:
        """Pass each chunk on as it arrives; record the assembled answer when the stream ends."""
        error = ""
        try:
            async for chunk in upstream.aiter_bytes():
                assembler.feed(chunk)
                yield chunk
        except Exception as exc:  # the upstream broke off mid-stream: the program sees the cut too
            error = f"the stream broke off: {type(exc).__name__}: {exc}"
            raise
        finally:
            await upstream.aclose()
            answer = assembler.answer()
            failed = error or assembler.error
            self._finish(
                exchange, upstream.status_code, answer.to_dict(), INFRASTRUCTURE if failed else OK, failed or ""
            )

    def _finish_body(self, exchange: Exchange, status: int, data: bytes, streaming: bool) -> None:
        if exchange.outcome == OPAQUE:
            self._finish(exchange, status, None, OPAQUE, exchange.error)
            return
        if status >= 400:
            self._finish(exchange, status, None, INFRASTRUCTURE, f"HTTP {status}: {_error_text(data)}")
            return
        try:
            if streaming:  # an event stream read whole (the program asked for it, we did not relay it)
                assembler = StreamAssembler(exchange.api)
                assembler.feed(data + b"\n\n")
                answer = assembler.answer()
            else:
                answer = parse_answer(exchange.api, json.loads(data))
        except (ValueError, NotUnderstood) as exc:
            self._finish(exchange, status, None, INFRASTRUCTURE, f"the answer could not be read: {exc}")
            return
        self._finish(exchange, status, answer.to_dict(), OK, "")

    def _finish(self, exchange: Exchange, status: int, answer: dict[str, Any] | None, outcome: str, error: str) -> None:
        exchange.status, exchange.answer, exchange.outcome, exchange.error = status, answer, outcome, error
        exchange.seconds = round(time.time() - exchange.started, 6)
        self.recorder.add(exchange)


_EXCHANGE_IDS = itertools.count(1)


def _split_run(path: str) -> tuple[str, str | None]:
    """``/run/<id>/v1/x`` -> (``/v1/x``, id); other paths unchanged with no id."""
    if path.startswith(RUN_PREFIX):
        rest = path[len(RUN_PREFIX) :]
        run_id, _, tail = rest.partition("/")
        return "/" + tail, run_id or None
    return path, None


def _error_text(data: bytes, limit: int = 300) -> str:
    """The message of an OpenAI-style error body, else the body's start."""
    try:
        body = json.loads(data)
        error = body.get("error") if isinstance(body, dict) else None
        text = error.get("message") if isinstance(error, dict) else (error or body)
        text = text if isinstance(text, str) else json.dumps(text)
    except ValueError:
        text = data.decode("utf-8", "replace")
    return text[:limit]
