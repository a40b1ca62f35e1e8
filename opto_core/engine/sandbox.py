"""``isolation="sandbox"``: every worker process in a box the kernel enforces.

A worker of ``isolation="process"`` can still do anything the user can: read keys from the
environment, write to the home directory, call any host. The sandbox starts each worker as a fresh
interpreter inside **bubblewrap** (``bwrap``: Linux namespaces, no daemon, no root needed where
unprivileged user namespaces are allowed), with five layers:

=============  ==================================================================================
files          the whole file system read-only (a new mount namespace; root's mounts are locked);
               writable: a scratch directory (also ``$HOME``, ``$TMPDIR`` and the working
               directory) and a private ``/tmp``, both gone when the executor closes; well-known
               credential files under ``$HOME`` (``~/.ssh``, ``~/.aws``, ``~/.netrc``...) hidden.
environment    a new environment: ``PATH``, locale, ``PYTHONPATH`` and the variables named in
               ``pass_env`` only; no API key reaches the box unless you pass it.
network        a new network namespace: the box has its own loopback and no route out. Each
               endpoint the workflow needs (``endpoints``, plus ``OPENAI_BASE_URL``) is served inside
               the box on a loopback address (names map to it in the box's ``/etc/hosts``) by a relay
               that reaches the driver through a unix socket; the driver connects only to listed
               endpoints (TLS passes through untouched). ``network="host"`` keeps the host's network,
               ``network="none"`` gives none.
processes      a new PID namespace (the box sees its own processes only, and all die with the worker);
               at most ``max_processes`` processes: a ``pids`` cgroup where this process may make one
               (root), else ``RLIMIT_NPROC`` (exact inside the box's user namespace).
resources      ``RLIMIT_DATA`` (memory; ``RLIMIT_AS`` would break libraries that reserve address space),
               ``RLIMIT_CPU`` per run, ``RLIMIT_FSIZE`` (largest file), ``RLIMIT_NOFILE``, no core dumps;
               and ``eval_timeout``, which kills a run whatever it does.
=============  ==================================================================================

Where a facility is missing (macOS and Windows: no namespaces; Ubuntu 24.04+ restricts unprivileged
user namespaces through AppArmor; bubblewrap not installed), `Sandbox.plan` says which layer is
missing and why. The layers in ``require`` (by default files and environment) must apply, or the
executor refuses to start (`SandboxUnavailable`, with what would still apply and how to get the
rest); other missing layers are said once. The sandbox never runs unconfined without saying so.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Sequence
from urllib.parse import urlsplit

log = logging.getLogger("opto")

LAYERS = ("files", "environment", "network", "processes", "resources")
NETWORK_MODES = ("endpoints", "none", "host")

#: Variables every box gets (when set here): what a Python program needs to start and print.
BASE_ENV = (
    "PATH",
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TERM",
    "PYTHONPATH",
    "PYTHONHASHSEED",
    "PYTHONIOENCODING",
    "PYTHONUTF8",
    "VIRTUAL_ENV",
)
#: Where clients read the model endpoint from; the endpoint joins the allowed ones.
ENDPOINT_ENV = ("OPENAI_BASE_URL", "OPENAI_API_BASE")
#: Credential files and directories under $HOME that the box never sees (hidden by an empty mount).
HIDDEN_IN_HOME = (
    ".ssh",
    ".aws",
    ".azure",
    ".gnupg",
    ".docker",
    ".kube",
    ".netrc",
    ".pgpass",
    ".pypirc",
    ".git-credentials",
    ".npmrc",
    ".config/gcloud",
    ".config/gh",
    ".config/openai",
    ".cache/huggingface/token",
    ".huggingface/token",
)


class SandboxUnavailable(RuntimeError):
    """A layer the sandbox requires cannot be built on this machine (the message says why and what would apply)."""


@dataclass(frozen=True)
class Endpoint:
    """A host and port the workflow may reach from inside the box, and where the box's relay listens for it."""

    host: str
    port: int
    box_address: str = "127.0.0.1"

    @property
    def label(self) -> str:
        return f"{self.host}:{self.port}"


def parse_endpoint(text: str) -> tuple[str, int]:
    """``https://api.openai.com/v1`` -> ("api.openai.com", 443); ``host:port`` and ``[::1]:80`` too."""
    raw = str(text).strip()
    parts = urlsplit(raw if "://" in raw else f"tcp://{raw}")
    if not parts.hostname:
        raise ValueError(f"an endpoint is a URL or host:port, got {text!r}")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"bad port in endpoint {text!r}: {exc}") from None
    if port is None:
        port = {"https": 443, "http": 80}.get(parts.scheme)
    if port is None:
        raise ValueError(f"endpoint {text!r} names no port (give host:port or an http(s) URL)")
    return parts.hostname, port


# ----- what this machine offers ----------------------------------------------------------------------------
@dataclass
class Facilities:
    """What the kernel and the installed tools offer here (probed once per process)."""

    platform: str
    bwrap: str | None = None  # path of a bwrap that works here
    bwrap_problem: str = ""  # why bubblewrap cannot be used, when it cannot
    pids_cgroup: str | None = None  # a cgroup directory under which we may make pids cgroups
    rlimits: bool = False
    root: bool = False


@lru_cache(maxsize=1)
def probe() -> Facilities:
    """Look (once) at what this machine offers: bubblewrap that works, a pids cgroup, rlimits."""
    found = Facilities(sys.platform, rlimits=_has_rlimits(), root=hasattr(os, "geteuid") and os.geteuid() == 0)
    if not sys.platform.startswith("linux"):
        found.bwrap_problem = f"{sys.platform} has no Linux namespaces (bubblewrap needs Linux)"
        return found
    path = shutil.which("bwrap")
    if path is None:
        found.bwrap_problem = "bubblewrap is not installed (Debian/Ubuntu: apt-get install bubblewrap)"
    else:
        try:
            done = subprocess.run(
                [
                    path,
                    "--ro-bind",
                    "/",
                    "/",
                    "--dev",
                    "/dev",
                    "--proc",
                    "/proc",
                    "--unshare-user",
                    "--unshare-pid",
                    "--unshare-net",
                    "--die-with-parent",
                    "true",
                ],
                capture_output=True,
                text=True,
                timeout=20,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            found.bwrap_problem = f"bubblewrap could not run: {exc}"
        else:
            if done.returncode == 0:
                found.bwrap = path
            else:
                found.bwrap_problem = (
                    f"bubblewrap cannot make namespaces here ({done.stderr.strip()[:200]}); "
                    f"unprivileged user namespaces are off or restricted (Ubuntu 24.04+: "
                    f"AppArmor's kernel.apparmor_restrict_unprivileged_userns)"
                )
    if found.root:
        found.pids_cgroup = _pids_cgroup_root()
    return found


def _has_rlimits() -> bool:
    try:
        import resource  # noqa: F401
    except ImportError:
        return False
    return True


def _pids_cgroup_root() -> str | None:
    """A directory where this (root) process may create pids cgroups: cgroup v1's pids hierarchy, or v2's root."""
    v1 = Path("/sys/fs/cgroup/pids")
    if (v1 / "cgroup.procs").exists() and os.access(v1, os.W_OK):
        return str(v1)
    v2 = Path("/sys/fs/cgroup")
    try:
        if "pids" in (v2 / "cgroup.subtree_control").read_text().split() and os.access(v2, os.W_OK):
            return str(v2)
    except OSError:
        pass
    return None


# ----- the sandbox -----------------------------------------------------------------------------------------
@dataclass
class Plan:
    """Which layers apply (and how), which are missing (and why)."""

    applied: dict[str, str] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        parts = [f"{layer}: {how}" for layer, how in self.applied.items()]
        parts += [f"{layer}: MISSING ({why})" for layer, why in self.missing.items()]
        return "; ".join(parts)


@dataclass
class Sandbox:
    """Options of ``isolation="sandbox"`` (``optimize(..., isolation=Sandbox(endpoints=[...]))``).

    ``endpoints``: URLs or ``host:port`` the workflow may reach (its model servers); the value of
    ``OPENAI_BASE_URL``/``OPENAI_API_BASE`` and what the target lists in ``endpoints()`` join them.
    ``network``: ``"endpoints"`` (only those), ``"none"``, or ``"host"`` (the host's network, unconfined).
    ``pass_env``: environment variables the box gets besides the base ones (an API key the workflow
    needs goes here, knowingly: code in the box can read it). Limits: ``cpu_seconds`` per run,
    ``memory_mb`` (data segment), ``max_processes``, ``max_open_files``, ``max_file_mb``.
    ``require``: layers that must apply, else `SandboxUnavailable` (``()`` runs with whatever applies,
    said once).
    """

    endpoints: Sequence[str] = ()
    network: str = "endpoints"
    pass_env: Sequence[str] = ()
    cpu_seconds: float | None = 300.0
    memory_mb: int | None = 4096
    max_processes: int | None = 64
    max_open_files: int | None = 1024
    max_file_mb: int | None = 1024
    require: Sequence[str] = ("files", "environment")
    hidden: Sequence[str] = HIDDEN_IN_HOME

    def __post_init__(self) -> None:
        if self.network not in NETWORK_MODES:
            raise ValueError(f"Sandbox(network=...) must be one of {NETWORK_MODES}, got {self.network!r}")
        unknown = set(self.require) - set(LAYERS)
        if unknown:
            raise ValueError(f"Sandbox(require=...) names unknown layers {sorted(unknown)}; the layers are {LAYERS}")
        if isinstance(self.endpoints, str) or isinstance(self.pass_env, str):
            raise TypeError("Sandbox(endpoints=..., pass_env=...) take lists of strings")
        for endpoint in self.endpoints:
            parse_endpoint(endpoint)
        self._state: _BoxState | None = None

    # ----- planning ------------------------------------------------------------------------------------------
    def plan(self, facilities: Facilities | None = None) -> Plan:
        """What would apply on this machine, layer by layer."""
        found = facilities or probe()
        plan = Plan()
        plan.applied["environment"] = "a new environment without secrets" + (
            f" (passed on purpose: {', '.join(self.pass_env)})" if self.pass_env else ""
        )
        if found.bwrap:
            plan.applied["files"] = "bubblewrap: read-only file system, writable scratch directory and private /tmp"
            if self.network == "host":
                plan.missing["network"] = "network='host' keeps the host's network"
            else:
                plan.applied["network"] = (
                    "no network"
                    if self.network == "none"
                    else "a network namespace; only the listed endpoints, through a relay"
                )
        else:
            plan.missing["files"] = found.bwrap_problem
            plan.missing["network"] = found.bwrap_problem
        if self.max_processes is None:
            plan.missing["processes"] = "max_processes=None"
        elif found.pids_cgroup:
            plan.applied["processes"] = f"a pids cgroup (at most {self.max_processes})"
        elif found.rlimits and found.bwrap and not found.root:
            plan.applied["processes"] = f"RLIMIT_NPROC in the box's user namespace (at most {self.max_processes})"
        elif found.root:
            plan.missing["processes"] = "root is exempt from RLIMIT_NPROC and no pids cgroup can be made here"
        else:  # outside a user namespace RLIMIT_NPROC counts every process of this user, not the box's
            plan.missing["processes"] = (
                "without a user namespace of its own, RLIMIT_NPROC would count all of this user's processes"
                if found.rlimits
                else "no resource limits on this platform"
            )
        if found.rlimits:
            plan.applied["resources"] = "rlimits: " + ", ".join(
                part
                for part in (
                    f"memory {self.memory_mb} MB" if self.memory_mb else "",
                    f"CPU {self.cpu_seconds:g} s per run" if self.cpu_seconds else "",
                    f"files up to {self.max_file_mb} MB" if self.max_file_mb else "",
                    f"{self.max_open_files} open files" if self.max_open_files else "",
                    "no core dumps",
                )
                if part
            )
        else:
            plan.missing["resources"] = f"{found.platform} has no POSIX resource limits"
        return plan

    # ----- the driver's side -----------------------------------------------------------------------------------
    def prepare(self, target: Any = None) -> Plan:
        """Check the layers, then make the scratch directory, the hosts file and the network forwarder."""
        plan = self.plan()
        missing_required = [layer for layer in self.require if layer in plan.missing]
        if missing_required:
            still = "; ".join(f"{layer}: {how}" for layer, how in plan.applied.items()) or "nothing"
            raise SandboxUnavailable(
                "isolation='sandbox' cannot confine the workflow here: "
                + "; ".join(f"{layer} is missing ({plan.missing[layer]})" for layer in missing_required)
                + f". What would still apply: {still}. Install or enable what is missing, or choose knowingly: "
                f"Sandbox(require=()) runs with the layers that apply, isolation='process' runs without OS "
                f"confinement (see docs/security.md)"
            )
        if self._state is None:
            self._state = _BoxState.make(self, target)
        for layer, why in plan.missing.items():
            log.warning("isolation='sandbox': the %s layer is missing (%s)", layer, why)
        log.info(
            "isolation='sandbox': %s; the workflow may reach: %s",
            plan.summary(),
            ", ".join(e.label for e in self._state.endpoints) or "nothing",
        )
        return plan

    @property
    def scratch(self) -> str | None:
        """The box's writable directory on this machine (after `prepare`)."""
        return self._state.scratch if self._state else None

    def wrap(self, command: list[str], keep_fds: Sequence[int] = ()) -> tuple[list[str], dict[str, str], str]:
        """``(command, env, cwd)`` that run ``command`` in a new box."""
        if self._state is None:
            self.prepare()
        assert self._state is not None
        return self._state.wrap(command)

    def inside(self) -> dict[str, Any]:
        """What the worker sets up inside the box before the workflow is built (`confine_inside`)."""
        assert self._state is not None, "prepare() first"
        state = self._state
        return {
            "memory_mb": self.memory_mb,
            "cpu_seconds": self.cpu_seconds,
            "max_file_mb": self.max_file_mb,
            "max_open_files": self.max_open_files,
            "max_processes": self.max_processes if state.nproc_inside else None,
            "relay": [(e.box_address, e.port, i) for i, e in enumerate(state.endpoints)] if state.forwarder else [],
            "relay_socket": state.forwarder.path if state.forwarder else None,
        }

    def cleanup(self) -> None:
        """Stop the forwarder, remove the scratch directory and the cgroups (all ours)."""
        state, self._state = self._state, None
        if state is not None:
            state.close()


class _BoxState:
    """What one executor's boxes share on the driver's side: scratch, hosts file, forwarder, cgroups."""

    def __init__(self, sandbox: Sandbox, facilities: Facilities) -> None:
        self.sandbox, self.facilities = sandbox, facilities
        self.home = tempfile.mkdtemp(prefix="opto-box-")
        self.scratch = os.path.join(self.home, "scratch")
        os.mkdir(self.scratch, 0o700)
        self.endpoints: list[Endpoint] = []
        self.hosts_file: str | None = None
        self.forwarder: Any = None
        self.cgroups: list[str] = []
        self.nproc_inside = False

    @classmethod
    def make(cls, sandbox: Sandbox, target: Any) -> _BoxState:
        state = cls(sandbox, probe())
        try:
            state._setup(target)
        except BaseException:
            state.close()
            raise
        return state

    def _setup(self, target: Any) -> None:
        found, sandbox = self.facilities, self.sandbox
        self.nproc_inside = bool(sandbox.max_processes) and not found.pids_cgroup and found.rlimits and not found.root
        if not found.bwrap or sandbox.network != "endpoints":
            return
        wanted = list(sandbox.endpoints) + [os.environ[n] for n in ENDPOINT_ENV if os.environ.get(n)]
        listed = getattr(target, "endpoints", None)
        if callable(listed):
            wanted += list(listed() or [])
        names: dict[str, str] = {}
        seen: set[tuple[str, int]] = set()
        for text in wanted:
            host, port = parse_endpoint(text)
            if (host, port) in seen:
                continue
            seen.add((host, port))
            self.endpoints.append(Endpoint(host, port, _box_address(host, names)))
        if not self.endpoints:
            return
        hosts = ["127.0.0.1 localhost", "::1 localhost ip6-localhost"]
        hosts += [f"{address} {name}" for name, address in names.items()]
        self.hosts_file = os.path.join(self.home, "hosts")
        Path(self.hosts_file).write_text("\n".join(hosts) + "\n")
        from opto_core.engine.sandbox_network import Forwarder

        control = os.path.join(self.home, "control")
        os.mkdir(control, 0o700)
        self.forwarder = Forwarder(os.path.join(control, "forward.sock"), [(e.host, e.port) for e in self.endpoints])

    def _cgroup(self) -> str | None:
        root, limit = self.facilities.pids_cgroup, self.sandbox.max_processes
        if not root or not limit:
            return None
        path = os.path.join(root, f"opto-{os.getpid()}-{len(self.cgroups)}-{os.urandom(3).hex()}")
        try:
            os.mkdir(path)
            Path(path, "pids.max").write_text(str(int(limit)))
        except OSError as exc:
            log.warning("isolation='sandbox': could not make a pids cgroup (%s); processes are not limited", exc)
            return None
        self.cgroups.append(path)
        return path

    def env(self) -> dict[str, str]:
        names = set(BASE_ENV) | set(self.sandbox.pass_env)
        env = {name: os.environ[name] for name in names if name in os.environ}
        for name in ENDPOINT_ENV:  # where the model is: not a secret, unless the URL carries credentials
            value = os.environ.get(name)
            if value and "@" not in value.split("//", 1)[-1].split("/", 1)[0]:
                env[name] = value
        root = str(Path(__file__).resolve().parents[2])  # the directory that holds opto_core
        env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
        env.update(HOME=self.scratch, TMPDIR=self.scratch, PYTHONDONTWRITEBYTECODE="1", OPTO_SANDBOX="1")
        return env

    def wrap(self, command: list[str]) -> tuple[list[str], dict[str, str], str]:
        env = self.env()
        bwrap = self.facilities.bwrap
        if not bwrap:  # no bubblewrap, and the user accepted that (require=()): environment and limits only
            return command, env, self.scratch
        args = [
            bwrap,
            "--die-with-parent",
            "--new-session",
            "--unshare-user",
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-cgroup-try",
        ]
        if self.sandbox.network != "host":
            args.append("--unshare-net")
        args += ["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]
        for needed in _code_under_tmp():  # the private /tmp must not hide the code and the Python that runs
            args += ["--ro-bind", needed, needed]
        home = Path(os.path.expanduser("~"))
        for relative in self.sandbox.hidden:
            hidden = home / relative
            if hidden.is_dir():
                args += ["--tmpfs", str(hidden)]
            elif hidden.exists():
                args += ["--ro-bind", os.devnull, str(hidden)]
        args += ["--bind", self.scratch, self.scratch]
        if self.forwarder is not None:
            control = os.path.dirname(self.forwarder.path)
            args += ["--ro-bind", control, control]
        if self.hosts_file is not None:
            args += ["--ro-bind", self.hosts_file, "/etc/hosts"]
        args += ["--chdir", self.scratch, "--cap-drop", "ALL", "--clearenv"]
        for name, value in env.items():
            args += ["--setenv", name, value]
        args += ["--", *command]
        cgroup = self._cgroup()
        if cgroup is not None:  # the shell joins the cgroup, then becomes bwrap: everything after is counted
            args = ["/bin/sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', cgroup, *args]
        return args, env, self.scratch

    def close(self) -> None:
        if self.forwarder is not None:
            self.forwarder.close()
        for path in self.cgroups:
            for _ in range(20):  # a cgroup can be removed once its processes are gone
                try:
                    os.rmdir(path)
                    break
                except OSError:
                    import time

                    time.sleep(0.05)
        shutil.rmtree(self.home, ignore_errors=True)


def _box_address(host: str, names: dict[str, str]) -> str:
    """Where the relay listens in the box for ``host``: loopback itself, or a loopback address of its own."""
    if host in ("localhost",):
        return "127.0.0.1"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:  # a name: a loopback address of its own, named in the box's /etc/hosts
        if host not in names:
            names[host] = f"127.0.{len(names) // 250}.{2 + len(names) % 250}"
        return names[host]
    if address.is_loopback and address.version == 4:
        return str(address)
    raise ValueError(
        f"endpoint {host} is an IP address outside loopback; the box can serve it only by name "
        f"(give the host name), or use Sandbox(network='host')"
    )


# ----- inside the box ----------------------------------------------------------------------------------------
def confine_inside(spec: dict[str, Any]) -> Callable[[], None] | None:
    """Run in the worker, in the box, before the workflow is built: limits and the endpoint relay.

    Returns what to call before each run (the per-run CPU limit), or None.
    """
    import signal

    try:
        import resource
    except ImportError:
        resource = None  # type: ignore[assignment]
    if resource is not None:

        def limit(which: int, value: int) -> None:
            soft, hard = resource.getrlimit(which)
            if hard != resource.RLIM_INFINITY:
                value = min(value, hard)
            resource.setrlimit(which, (value, value))

        limit(resource.RLIMIT_CORE, 0)
        if spec.get("memory_mb"):
            limit(resource.RLIMIT_DATA, int(spec["memory_mb"]) * 1024 * 1024)
        if spec.get("max_file_mb"):
            limit(resource.RLIMIT_FSIZE, int(spec["max_file_mb"]) * 1024 * 1024)
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) instead of killing
        if spec.get("max_open_files"):
            limit(resource.RLIMIT_NOFILE, int(spec["max_open_files"]))
        if spec.get("max_processes"):
            limit(resource.RLIMIT_NPROC, int(spec["max_processes"]))
    if spec.get("relay"):
        from opto_core.engine.sandbox_network import start_relays

        start_relays(spec["relay_socket"], spec["relay"])
    cpu = spec.get("cpu_seconds")
    if not cpu or resource is None:
        return None

    def before_run() -> None:  # CPU seconds counted per run: the soft limit moves with what was used
        used = resource.getrusage(resource.RUSAGE_SELF)
        spent = used.ru_utime + used.ru_stime
        _, hard = resource.getrlimit(resource.RLIMIT_CPU)
        soft = int(spent + float(cpu)) + 1
        resource.setrlimit(resource.RLIMIT_CPU, (soft if hard == resource.RLIM_INFINITY else min(soft, hard), hard))

    return before_run


def _code_under_tmp() -> list[str]:
    """The directories under ``/tmp`` the worker reads its code from: the package root, the Python
    installation (a virtualenv made in ``/tmp``, as CI does in a fresh clone) and the import path.
    Each is bound read-only over the box's private ``/tmp``; nested ones are covered by their parent."""
    root = Path(__file__).resolve().parents[2]
    candidates = [root, Path(sys.prefix), Path(sys.base_prefix), Path(sys.exec_prefix)]
    candidates += [Path(entry) for entry in sys.path if entry]
    candidates += [Path(entry) for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep) if entry]
    tmp = Path("/tmp")
    found: list[Path] = []
    for path in candidates:
        try:
            path = path.resolve()
        except OSError:
            continue
        if path != tmp and tmp in path.parents and path.exists():
            found.append(path)
    kept: list[str] = []
    for path in sorted(set(found), key=lambda p: len(p.parts)):
        if not any(Path(parent) in (path, *path.parents) for parent in kept):
            kept.append(str(path))
    return kept
