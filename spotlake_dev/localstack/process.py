"""Start, check and stop the local stack's server processes.

Every service is described by a :class:`ServiceSpec`: the command that runs it in
the foreground, the TCP ports it binds on 127.0.0.1, and a readiness probe.  The
supervisor starts it detached in its own session, records its PID under
``.stack/run/<name>.pid`` and its output under ``.stack/logs/<name>.log``, waits
for readiness on a condition with a timeout, and stops it by PID (TERM to the
whole process group, then KILL after a grace period).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from spotlake.errors import StackError
from spotlake.stack import StackLayout

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServiceSpec:
    """How to run one server process of the local stack."""

    name: str
    argv: Sequence[str]
    ports: Sequence[int]
    ready: Callable[[], bool]
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    prepare: Callable[[], None] | None = None
    ready_timeout: float = 60.0
    stop_timeout: float = 20.0
    user: str | None = None


def port_holder(port: int, host: str = "127.0.0.1") -> str | None:
    """Describe the process listening on ``port``, or ``None`` if the port is free."""
    try:
        conns = psutil.net_connections(kind="inet")
    except psutil.AccessDenied:  # pragma: no cover - we run as root locally
        conns = []
    for conn in conns:
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
            if conn.pid:
                try:
                    proc = psutil.Process(conn.pid)
                    return f"pid {conn.pid} ({' '.join(proc.cmdline())[:160]})"
                except psutil.Error:
                    return f"pid {conn.pid}"
            return "an unknown process"
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        if sock.connect_ex((host, port)) == 0:
            return "an unknown process"
    return None


def port_bindable(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could bind ``host:port`` now: no listener, and no connection using it
    as its local port (an outgoing connection from an ephemeral port blocks a later bind)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(start: int, host: str = "127.0.0.1") -> int:
    """The first port from ``start`` that nothing listens on and a server can bind."""
    port = start
    while port_holder(port, host) is not None or not port_bindable(port, host):
        port += 1
    return port


def tcp_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def wait_for(
    condition: Callable[[], bool],
    timeout: float,
    interval: float = 0.25,
    propagate: tuple[type[BaseException], ...] = (),
) -> bool:
    """Poll ``condition`` until it is true or ``timeout`` seconds have passed.

    A probe that raises counts as "not yet", except for the ``propagate`` exceptions.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            if condition():
                return True
        except propagate:
            raise
        except Exception as exc:  # noqa: BLE001 - a probe that raises means "not ready yet"
            log.debug("not ready yet: %s", exc)
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def tail(path: Path, lines: int = 30) -> str:
    if not path.exists():
        return f"(no log at {path})"
    text = path.read_text(errors="replace").splitlines()
    return "\n".join(text[-lines:])


class Supervisor:
    """Runs :class:`ServiceSpec` processes with PID files and logs under one folder."""

    def __init__(self, layout: StackLayout) -> None:
        self.layout = layout

    def pid_file(self, name: str) -> Path:
        return self.layout.run_dir / f"{name}.pid"

    def log_file(self, name: str) -> Path:
        return self.layout.log_dir / f"{name}.log"

    def pid(self, name: str) -> int | None:
        """The PID of the running service, or ``None`` (stale PID files are removed)."""
        path = self.pid_file(name)
        if not path.exists():
            return None
        try:
            pid = int(path.read_text().strip())
        except ValueError:
            path.unlink(missing_ok=True)
            return None
        if not psutil.pid_exists(pid):
            path.unlink(missing_ok=True)
            return None
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                path.unlink(missing_ok=True)
                return None
        except psutil.Error:
            path.unlink(missing_ok=True)
            return None
        return pid

    def is_running(self, name: str) -> bool:
        return self.pid(name) is not None

    def start(self, spec: ServiceSpec) -> int:
        """Start ``spec`` unless it already runs; return its PID once it is ready."""
        existing = self.pid(spec.name)
        if existing is not None:
            if not wait_for(spec.ready, spec.ready_timeout):
                raise StackError(
                    f"{spec.name} (pid {existing}) is running but not ready after "
                    f"{spec.ready_timeout:.0f} s; last lines of {self.log_file(spec.name)}:\n"
                    f"{tail(self.log_file(spec.name))}\nFix: `make down` then `make up`."
                )
            return existing
        _check_ports(spec)
        if spec.prepare is not None:
            spec.prepare()
        self.layout.ensure()
        log = self.log_file(spec.name)
        env = {**os.environ, **spec.env}
        preexec = _switch_user(spec.user, env) if spec.user else None
        with log.open("ab") as out:
            out.write(f"\n--- start {time.strftime('%Y-%m-%dT%H:%M:%S')} {' '.join(spec.argv)}\n".encode())
            out.flush()
            proc = subprocess.Popen(
                list(spec.argv),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=spec.cwd,
                env=env,
                start_new_session=True,
                preexec_fn=preexec,
            )
        self.pid_file(spec.name).write_text(str(proc.pid))

        def ready_or_dead() -> bool:
            if proc.poll() is not None:
                raise _Exited(proc.returncode)
            return spec.ready()

        try:
            ok = wait_for(ready_or_dead, spec.ready_timeout, propagate=(_Exited,))
        except _Exited as exited:
            self.pid_file(spec.name).unlink(missing_ok=True)
            raise StackError(
                f"{spec.name} exited with code {exited.code} while starting; last lines of {log}:\n{tail(log)}"
            ) from None
        if not ok:
            self.stop(spec.name, spec.stop_timeout)
            raise StackError(
                f"{spec.name} did not become ready within {spec.ready_timeout:.0f} s; last lines of {log}:\n{tail(log)}"
            )
        return proc.pid

    def stop(self, name: str, timeout: float = 20.0) -> bool:
        """Stop the service's whole process group; return whether it was running."""
        pid = self.pid(name)
        if pid is None:
            return False
        procs = _process_tree(pid)
        for proc in procs:
            try:
                proc.send_signal(signal.SIGTERM)
            except psutil.Error:
                pass
        _, alive = psutil.wait_procs(procs, timeout=timeout)
        for proc in alive:
            try:
                proc.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(alive, timeout=5)
        self.pid_file(name).unlink(missing_ok=True)
        return True

    def kill(self, name: str) -> None:
        """SIGKILL the service and its children at once (a crash, as tests inject it)."""
        pid = self.pid(name)
        if pid is None:
            return
        procs = _process_tree(pid)
        for proc in procs:
            try:
                proc.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(procs, timeout=5)
        self.pid_file(name).unlink(missing_ok=True)


class _Exited(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def _process_tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
    except psutil.Error:
        return []
    procs = [root]
    try:
        procs.extend(root.children(recursive=True))
    except psutil.Error:
        pass
    # Members of the same session that were re-parented (daemonised children).
    try:
        sid = os.getsid(pid)
        for proc in psutil.process_iter():
            try:
                if proc.pid != pid and os.getsid(proc.pid) == sid and proc not in procs:
                    procs.append(proc)
            except (psutil.Error, OSError):
                continue
    except OSError:
        pass
    return procs


def _check_ports(spec: ServiceSpec) -> None:
    """StackError naming the fix when one of ``spec``'s ports is taken or cannot be bound."""
    for port in spec.ports:
        holder = port_holder(port)
        if holder is not None:
            raise StackError(
                f"cannot start {spec.name}: port 127.0.0.1:{port} is already taken by "
                f"{holder}. Fix: stop that process, or set another port for {spec.name} "
                f"in stack.env."
            )
        if not port_bindable(port):
            raise StackError(
                f"cannot start {spec.name}: port 127.0.0.1:{port} cannot be bound: a connection "
                "uses it as its local port (it lies in the ephemeral range, 32768-60999 on Linux). "
                f"Fix: set a port below 32768 for {spec.name} in stack.env."
            )


def _switch_user(user: str, env: dict[str, str]) -> Callable[[], None]:
    """The child's pre-exec step that runs it as ``user`` (whose home goes into ``env``)."""
    import pwd

    record = pwd.getpwnam(user)

    def preexec() -> None:  # pragma: no cover - runs in the child
        os.setgid(record.pw_gid)
        os.setuid(record.pw_uid)

    env["HOME"] = record.pw_dir
    return preexec
