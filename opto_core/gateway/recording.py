"""What the gateway keeps of the traffic: exchanges (one request and its answer), grouped into runs.

A **run** is one execution of the user's program: the calls whose graph is built together. Which run
a request belongs to, first rule that applies:

1. the path: ``/run/<id>/v1/...``. `GatewayTarget` gives every example its own base URL of this
   form through ``OPENAI_BASE_URL``, so runs of examples in parallel never mix, in any language;
2. the header ``X-Opto-Run: <id>``, for programs that can send one;
3. the run the caller opened with ``Gateway.open_run()`` when it is the only one open (a Python
   function whose client points at the gateway's plain base URL);
4. otherwise a **window**: consecutive requests from the same client address; a request that comes
   more than ``run_gap`` seconds (default 10) after that client's previous one starts a new run.

A run closes when its owner closes it (`GatewayTarget` or ``Gateway.open_run``, when the program
ended), else when it lapses: no request started and no answer ended for ``run_gap`` seconds, none in
flight (a window, rule 4, and a run named by a path or header that no owner holds, as with
``opto gateway`` in production; checked on each request, every second, and when the gateway stops).
A request for a closed run that is named again is still recorded in it. Closed runs are what graphs
are built from, and what a values file's unmatched prompts are reported for.

What is recorded never holds a secret: no request headers at all (the ``Authorization`` header and
the upstream key are never read into a record), bodies as sent upstream, answers reduced to text,
tool calls and usage. With ``record_dir`` each run is also appended to ``<record_dir>/<run>.jsonl``,
one exchange per line, as it happens.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
from collections import Counter, OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from opto_core.gateway.wire import WireAnswer, WireRequest, parse_request
from opto_core.kernel.redact import scrub

#: How an exchange ended: a model answer, an upstream failure (status >= 400, or no answer at all), a
#: request the gateway could not parse (forwarded untouched).
OK, INFRASTRUCTURE, OPAQUE = "ok", "infrastructure", "opaque"
_RUN_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
_IDS = itertools.count(1)


def valid_run_id(run_id: str) -> bool:
    """Run ids name files in the record directory: letters, digits, ``_.:-``, at most 128 characters."""
    return bool(_RUN_ID.match(run_id)) and run_id not in (".", "..")


@dataclass
class Exchange:
    """One model request as sent upstream (after rewriting) and its answer."""

    id: int
    run: str
    api: str  # "chat" | "responses"
    path: str
    started: float
    request: Any = None  # the JSON body sent upstream (None when it was not JSON)
    status: int = 0
    answer: dict[str, Any] | None = None  # WireAnswer.to_dict()
    outcome: str = OK  # OK | INFRASTRUCTURE | OPAQUE
    error: str = ""
    stream: bool = False
    seconds: float = 0.0
    applied: list[str] = field(default_factory=list)  # parameters whose value this request carries
    agent: str | None = None  # the agent whose system prompt rule matched
    positions: dict[str, list[int]] = field(default_factory=dict)  # prompt rule -> its message positions

    def parsed(self) -> WireRequest | None:
        """The request as a `WireRequest` (None for an opaque one)."""
        if self.outcome == OPAQUE or self.request is None:
            return None
        try:
            return parse_request(self.api, self.request)
        except ValueError:
            return None

    def wire_answer(self) -> WireAnswer | None:
        return WireAnswer.from_dict(self.answer) if self.answer is not None else None

    def to_dict(self) -> dict[str, Any]:
        return scrub(asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Exchange:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class Run:
    """The exchanges of one run of the program, in the order their requests arrived."""

    id: str
    started: float
    exchanges: list[Exchange] = field(default_factory=list)
    closed: bool = False
    last_seen: float = 0.0
    client: str = ""

    @property
    def failures(self) -> list[Exchange]:
        """Exchanges the upstream failed (passed through to the program unchanged)."""
        return [e for e in self.exchanges if e.outcome == INFRASTRUCTURE]


class Recorder:
    """Runs by id, thread-safe; keeps the latest ``keep_runs`` in memory, and every run on disk if asked.

    ``on_close(run)`` is called once per run when it closes (outside the lock).
    """

    def __init__(
        self,
        *,
        run_gap: float = 10.0,
        keep_runs: int = 200,
        record_dir: str | Path | None = None,
        on_close: Callable[[Run], None] | None = None,
    ) -> None:
        self.run_gap = run_gap
        self.keep_runs = keep_runs
        self.record_dir = Path(record_dir) if record_dir is not None else None
        if self.record_dir is not None:
            self.record_dir.mkdir(parents=True, exist_ok=True)
        self.on_close = on_close
        self._runs: OrderedDict[str, Run] = OrderedDict()
        self._windows: dict[str, Run] = {}  # client address -> its open window run
        self._opened: list[str] = []  # runs opened by a caller (rule 3)
        self._owned: set[str] = set()  # runs a caller opened or made (`open`, `ensure`): closed by it, never lapsed
        self._lock = threading.Lock()
        self._settled = threading.Condition(self._lock)
        self._in_flight: Counter[str] = Counter()  # run id -> exchanges started, not yet recorded

    # ----- which run ---------------------------------------------------------------------------------
    def run_for(self, explicit: str | None, client: str) -> Run:
        """The run a request belongs to (see the module docstring), created when new."""
        now = time.time()
        lapsed: list[Run] = []
        with self._lock:
            if explicit is None and len(self._opened) == 1:
                explicit = self._opened[0]
            if explicit is not None:
                run = self._runs.get(explicit)
                if run is None:
                    run = self._new(explicit, now, client)
            else:
                run = self._windows.get(client)
                if run is None or run.closed or (now - run.last_seen > self.run_gap and not self._in_flight[run.id]):
                    if run is not None and not run.closed:
                        lapsed.append(self._close(run))
                    run = self._windows[client] = self._new(f"w{int(now)}-{next(_IDS)}", now, client)
            run.last_seen = now
        self._closed(lapsed)
        return run

    def _new(self, run_id: str, now: float, client: str) -> Run:
        run = Run(run_id, now, last_seen=now, client=client)
        self._runs[run_id] = run
        while len(self._runs) > self.keep_runs:
            self._runs.popitem(last=False)
        return run

    def ensure(self, run_id: str) -> Run:
        """The run with this id, created (empty) when new: requests that name it go to it (rules 1-2)."""
        with self._lock:
            self._owned.add(run_id)
            return self._runs.get(run_id) or self._new(run_id, time.time(), "")

    def open(self, run_id: str) -> Run:
        """Open a run for the caller (rule 3 while it is the only one open; rules 1-2 always)."""
        with self._lock:
            run = self._runs.get(run_id) or self._new(run_id, time.time(), "")
            self._owned.add(run_id)
            if run_id not in self._opened:
                self._opened.append(run_id)
            return run

    def close(self, run_id: str) -> Run | None:
        """Close a run (its owner's program ended); returns it, or None when unknown."""
        with self._lock:
            if run_id in self._opened:
                self._opened.remove(run_id)
            run = self._runs.get(run_id)
            closed = [self._close(run)] if run is not None and not run.closed else []
        self._closed(closed)
        return run

    def close_lapsed(self, now: float | None = None, *, all_windows: bool = False) -> None:
        """Close the runs no owner holds (windows, and runs named by a path or header) that are idle for
        more than ``run_gap`` with nothing in flight (all of them with ``all_windows``: the gateway stops)."""
        now = time.time() if now is None else now
        with self._lock:
            closed = [
                self._close(run)
                for run in list(self._runs.values())
                if not run.closed
                and run.id not in self._owned
                and (all_windows or (now - run.last_seen > self.run_gap and not self._in_flight[run.id]))
            ]
        self._closed(closed)

    def _close(self, run: Run) -> Run:
        run.closed = True
        if self._windows.get(run.client) is run:
            del self._windows[run.client]
        return run

    def _closed(self, runs: list[Run]) -> None:
        if self.on_close is not None:
            for run in runs:
                self.on_close(run)

    # ----- recording ---------------------------------------------------------------------------------
    def started(self, exchange: Exchange) -> None:
        """An exchange is under way: `settle` waits for it to be recorded."""
        with self._lock:
            self._in_flight[exchange.run] += 1

    def settle(self, run_id: str, timeout: float = 10.0) -> bool:
        """Wait until every exchange of a run that started is recorded (a streamed answer is recorded when
        its stream ends, which a client that stops at ``[DONE]`` may not wait for). False on timeout."""
        with self._settled:
            return self._settled.wait_for(lambda: self._in_flight[run_id] <= 0, timeout)

    def add(self, exchange: Exchange) -> None:
        """Record a finished exchange in its run (and on disk)."""
        with self._lock:
            run = self._runs.get(exchange.run)
            if run is not None:
                run.exchanges.append(exchange)
                run.last_seen = max(run.last_seen, time.time())  # idle time counts from the answer's end
            if self._in_flight[exchange.run] > 0:
                self._in_flight[exchange.run] -= 1
            if self._in_flight[exchange.run] <= 0:
                self._in_flight.pop(exchange.run, None)
                self._settled.notify_all()
        if self.record_dir is not None:
            line = json.dumps(exchange.to_dict(), ensure_ascii=False, default=str)
            with (self.record_dir / f"{exchange.run}.jsonl").open("a", encoding="utf-8") as handle:
                handle.write(line + "\n")

    # ----- reading -----------------------------------------------------------------------------------
    def get(self, run_id: str) -> Run | None:
        with self._lock:
            return self._runs.get(run_id)

    def runs(self) -> list[Run]:
        with self._lock:
            return list(self._runs.values())

    def __iter__(self) -> Iterator[Run]:
        return iter(self.runs())


def load_runs(directory: str | Path) -> list[Run]:
    """Runs recorded with ``record_dir`` (``opto gateway --record DIR``), oldest first."""
    runs = []
    for path in sorted(Path(directory).glob("*.jsonl"), key=lambda p: p.stat().st_mtime):
        exchanges = [
            Exchange.from_dict(json.loads(line))
            for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip()
        ]
        if exchanges:
            runs.append(Run(path.stem, exchanges[0].started, exchanges, closed=True, last_seen=exchanges[-1].started))
    return runs
