"""What the recording gateway adds to a model call: the same request direct vs through ``opto gateway``.

Three processes on loopback, as in production: a scripted OpenAI-compatible upstream
(`opto_core.testing.ScriptedServer`, answers instantly), ``opto gateway --upstream <it>`` (the real
command: parsing, rewriting, recording, forwarding), and this client (one keep-alive ``httpx.Client``).
Requests alternate direct / through the gateway, so load on the machine hits both alike. Cases:

- ``chat``: a chat completions request (system + user message), answer read whole;
- ``chat, rewritten``: the same, with a values file whose prompt and temperature rewrite the request;
- ``stream``: the answer as server-sent events (7 chunks), read to the end;
- ``responses``: a Responses API request (``instructions`` + ``input``).

Added = median(through the gateway) - median(direct), per request, wall time. Target: under 2 ms.
On a loaded machine wall times stretch; the gateway's own CPU time per request (from /proc, Linux)
is printed too, which other processes disturb far less.

    python bench/gateway_overhead.py            # 2000 requests per case and path
    python bench/gateway_overhead.py --quick    # 200
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import emit_json, fmt_num, machine, make_parser, progress, table

TARGET_MS = 2.0
ROOT = Path(__file__).resolve().parent.parent
SYSTEM = "You are a careful assistant. Answer in one short paragraph."
ANSWER = (
    "Loopback answers are fast; this one is about two hundred characters long so that the body is "
    "realistic without being large, and it is the same for every request of the benchmark."
)

UPSTREAM = f"""
import sys, time
from opto_core.testing import ScriptedServer
server = ScriptedServer([{ANSWER!r}], repeat_last=True).start()
print(server.base_url, flush=True)
time.sleep(10 ** 6)
"""


def start(command: list[str], marker: str = "") -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    seen = []
    for line in process.stdout:
        seen.append(line)
        found = (
            line.split(marker, 1)[1].split()[0]
            if marker and marker in line
            else line.strip()
            if not marker and line.startswith("http")
            else None
        )
        if found:
            threading.Thread(target=process.stdout.read, daemon=True).start()  # keep the pipe drained
            return process, found
    raise RuntimeError("could not start: " + "".join(seen))


def bodies() -> dict[str, tuple[str, dict[str, Any]]]:
    chat = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Why is loopback fast?"}],
    }
    return {
        "chat": ("/chat/completions", chat),
        "stream": ("/chat/completions", {**chat, "stream": True}),
        "responses": ("/responses", {"model": "gpt-4o-mini", "instructions": SYSTEM, "input": "Why is loopback fast?"}),
    }


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process so far (Linux /proc), or None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def measure(http: Any, direct: str, proxied: str, path: str, body: dict[str, Any], n: int) -> tuple[list, list]:
    times: dict[str, list[float]] = {"direct": [], "gateway": []}
    for k in range(n + 20):
        for name, base in (
            (("direct", direct), ("gateway", proxied)) if k % 2 == 0 else (("gateway", proxied), ("direct", direct))
        ):
            start = time.perf_counter()
            if body.get("stream"):
                with http.stream("POST", base + path, json=body) as answer:
                    for _ in answer.iter_bytes():
                        pass
            else:
                answer = http.post(base + path, json=body)
                answer.read()
            elapsed = time.perf_counter() - start
            if answer.status_code != 200:
                raise RuntimeError(f"{name} answered {answer.status_code}: {answer.text[:200]}")
            if k >= 20:  # warm-up: connections, imports, first allocations
                times[name].append(elapsed)
    return times["direct"], times["gateway"]


def row(
    case: str,
    http: Any,
    direct_url: str,
    gateway: subprocess.Popen,
    gateway_url: str,
    path: str,
    body: dict[str, Any],
    n: int,
) -> dict[str, Any]:
    progress(f"{case}: {n} requests each way")
    cpu_before = cpu_seconds(gateway.pid)
    direct, proxied = measure(http, direct_url, gateway_url, path, body, n)
    cpu_after = cpu_seconds(gateway.pid)
    d, g = statistics.median(direct) * 1000, statistics.median(proxied) * 1000
    q = lambda xs: statistics.quantiles(xs, n=10)[-1] * 1000  # noqa: E731 (p90)
    cpu = (cpu_after - cpu_before) * 1000 / (n + 20) if cpu_before is not None and cpu_after is not None else None
    return {
        "case": case,
        "requests": len(direct),
        "direct_ms": d,
        "gateway_ms": g,
        "added_ms": g - d,
        "direct_p90_ms": q(direct),
        "gateway_p90_ms": q(proxied),
        "gateway_cpu_ms": cpu,
        "meets_target": g - d < TARGET_MS,
    }


def main() -> None:
    args = make_parser(__doc__.splitlines()[0]).parse_args()
    n = 200 if args.quick else 2000
    import httpx

    from opto_core.gateway.parameters import TrafficParameters

    info = machine()
    progress(f"machine: {info}")
    upstream, upstream_url = start([sys.executable, "-c", UPSTREAM])
    values = Path(tempfile.mkdtemp()) / "values.json"
    rules = TrafficParameters()
    rules.prompt("assistant.system", SYSTEM)
    rules.setting("temperature", 1.0)
    rules.save_values(str(values), {"assistant.system": SYSTEM + " Be concrete.", "temperature": 0.3})
    cli = [
        sys.executable,
        "-c",
        "from opto_core.app.cli import main; main()",
        "gateway",
        "--upstream",
        upstream_url,
        "--port",
        "0",
    ]
    plain, plain_url = start(cli, "OPENAI_BASE_URL=")
    rewriting, rewriting_url = start(cli + ["--values", str(values)], "OPENAI_BASE_URL=")
    rows = []
    try:
        with httpx.Client(timeout=30) as http:
            for case, (path, body) in bodies().items():
                rows.append(row(case, http, upstream_url, plain, plain_url, path, body, n))
            path, body = bodies()["chat"]
            rows.append(row("chat, rewritten", http, upstream_url, rewriting, rewriting_url, path, body, n))
    finally:
        for process in (plain, rewriting, upstream):
            process.terminate()
            process.wait(10)
    for item in rows:
        item.update(date=info["date"], load_average=info["load_average"])
    if args.json:
        emit_json(rows)
        return
    print(
        f"date {info['date']}; {info['cpus']} CPUs ({info['cpu']}); load average {info['load_average']}; "
        f"Python {info['python']}"
    )
    print(
        table(
            rows,
            [
                ("case", "case", None),
                ("requests", "requests", fmt_num),
                ("direct_ms", "direct median (ms)", lambda v: f"{v:.2f}"),
                ("gateway_ms", "via gateway median (ms)", lambda v: f"{v:.2f}"),
                ("added_ms", "added (ms)", lambda v: f"{v:.2f}"),
                ("direct_p90_ms", "direct p90 (ms)", lambda v: f"{v:.2f}"),
                ("gateway_p90_ms", "via gateway p90 (ms)", lambda v: f"{v:.2f}"),
                ("gateway_cpu_ms", "gateway CPU per request (ms)", lambda v: f"{v:.2f}"),
                ("meets_target", f"added < {TARGET_MS:g} ms", lambda v: "yes" if v else "NO"),
            ],
        )
    )


if __name__ == "__main__":
    main()
