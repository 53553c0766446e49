"""Start, stop and inspect local Elasticsearch/OpenSearch instances assembled by fetch.py.

Each instance lives in `<cache>/instances/<engine>-<name>/` with its own config copy, data,
logs, pid file and `state.json`, so several instances (a developer's long-running one and a test
session's) can run side by side from one read-only install.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import requests

from deployer.cluster.errors import ClusterError, PortInUseError, StartupError
from deployer.cluster.fetch import Install, assemble, cache_dir, load_install
from deployer.cluster.java import JavaRuntime, find_java
from deployer.cluster.plugin_dir import plugin_set_key, read_plugin_dir
from deployer.cluster.versions import EngineSpec, get_engine

Progress = Callable[[str], None]
HOST = "127.0.0.1"
DEFAULT_HEAP = "512m"
DEFAULT_TIMEOUT = 180.0
STOP_TIMEOUT = 30.0

# Servers started by this Python process, by process-group id, so that they can be reaped
# (a zombie child still "exists" for kill(pid, 0)) and stopped at interpreter exit.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}
_STOP_AT_EXIT: set[tuple[str, str, str]] = set()


def _quiet(_: str) -> None:
    return None


@dataclass
class Instance:
    """A local server instance as recorded in its state file."""

    engine: str
    name: str
    version: str
    url: str
    http_port: int
    transport_port: int
    pid: int
    pgid: int
    directory: str
    home: str
    java_home: str
    java_version: int
    heap: str
    started_at: float
    ready_seconds: float | None = None

    @property
    def server_log(self) -> Path:
        """Return the main server log file."""
        return Path(self.directory) / "logs" / f"{cluster_name(self.engine, self.name)}.log"


# ---------------------------------------------------------------------------------------------
# Pure helpers.


def cluster_name(engine: str, name: str) -> str:
    """Return the cluster (and node) name used for an instance."""
    return f"dac-{engine}-{name}"


def instance_dir(engine: str, name: str, root: Path | None = None) -> Path:
    """Return the directory that holds one instance's config, data, logs and state."""
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"invalid instance name {name!r}")
    return (root or cache_dir()) / "instances" / f"{engine}-{name}"


def server_settings(
    spec: EngineSpec, *, name: str, http_port: int, transport_port: int, directory: Path
) -> dict[str, str]:
    """Return the node settings written to the instance's config file."""
    settings = {
        "cluster.name": cluster_name(spec.engine, name),
        "node.name": cluster_name(spec.engine, name),
        "discovery.type": "single-node",
        "network.host": HOST,
        "http.port": str(http_port),
        "transport.port": str(transport_port),
        "path.data": str(directory / "data"),
        "path.logs": str(directory / "logs"),
        # Small CI disks would otherwise cross the flood-stage watermark and turn indices read-only.
        "cluster.routing.allocation.disk.threshold_enabled": "false",
        "action.destructive_requires_name": "false",
    }
    settings.update(spec.settings)
    return settings


def settings_yaml(settings: dict[str, str]) -> str:
    """Render flat settings as YAML (values JSON-quoted, which YAML reads as plain strings)."""
    lines = ["# Written by dac for a local test instance; regenerated at every start."]
    lines += [f"{key}: {json.dumps(value)}" for key, value in settings.items()]
    return "\n".join(lines) + "\n"


def jvm_options(heap: str, running_as_root: bool) -> list[str]:
    """Return the extra JVM options for a local instance."""
    options = [f"-Xms{heap}", f"-Xmx{heap}"]
    if running_as_root:
        # Both servers refuse to run as root, and check it through JNA. CI and containers here run
        # as root, and a local loopback-only test node loses nothing that matters (mlockall, the
        # seccomp filter) when JNA's native library is not loaded, so keep JNA from loading it.
        options += ["-Djna.nosys=true", "-Djna.noclasspath=true"]
    return options


def server_command(spec: EngineSpec, home: Path, pid_file: Path) -> list[str]:
    """Return the command that runs the server in the foreground and writes its pid file."""
    return [str(home / spec.executable), "-p", str(pid_file)]


def server_env(
    spec: EngineSpec, java: JavaRuntime, conf_dir: Path, base: dict[str, str] | None = None
) -> dict[str, str]:
    """Return the environment for the server process."""
    env = dict(os.environ if base is None else base)
    env[spec.java_home_env] = str(java.home)
    env["JAVA_HOME"] = str(java.home)
    env[spec.path_conf_env] = str(conf_dir)
    # Heap and flags come from jvm.options.d; an inherited *_JAVA_OPTS would override them.
    env.pop(spec.java_opts_env, None)
    return env


def port_is_free(port: int, host: str = HOST) -> bool:
    """Return True when nothing listens on (or holds) `host:port`."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def free_port(host: str = HOST, exclude: set[int] | None = None) -> int:
    """Return a port the OS reports free on `host`."""
    for _ in range(20):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = sock.getsockname()[1]
        if not exclude or port not in exclude:
            return port
    raise ClusterError("could not find a free port on 127.0.0.1")


def choose_ports(spec: EngineSpec, http_port: int | None, transport_port: int | None) -> tuple[int, int]:
    """Return (http, transport) ports: explicit ones must be free; defaults fall back to any free port."""
    chosen: list[int] = []
    for requested, default, label, flag in (
        (http_port, spec.default_http_port, "HTTP", "--http-port"),
        (transport_port, spec.default_transport_port, "transport", "--transport-port"),
    ):
        if requested is not None:
            if requested in chosen or not port_is_free(requested):
                raise PortInUseError(
                    f"{label} port {requested} on {HOST} is already in use",
                    hint=f"stop what listens there (ss -ltnp 'sport = :{requested}'), or pass another "
                    f"{flag}, or omit it to let dac pick a free port",
                )
            chosen.append(requested)
        elif default not in chosen and port_is_free(default):
            chosen.append(default)
        else:
            chosen.append(free_port(exclude=set(chosen)))
    return chosen[0], chosen[1]


def tail_lines(path: Path, lines: int = 40) -> str:
    """Return the last `lines` lines of a text file ('' when it does not exist)."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            data = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


def log_tail(directory: Path, engine: str, name: str, lines: int = 40) -> str:
    """Return the tail of the server log, or of the console output when the log is empty."""
    server = tail_lines(directory / "logs" / f"{cluster_name(engine, name)}.log", lines)
    console = tail_lines(directory / "logs" / "console.log", lines)
    if server and console and "Exception" in console and "Exception" not in server:
        return console
    return server or console


# ---------------------------------------------------------------------------------------------
# Process handling.


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"


def pid_alive(pid: int) -> bool:
    """Return True when `pid` is a running (not zombie) process."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _is_zombie(pid)


def group_alive(pgid: int) -> bool:
    """Return True when any non-zombie process of process group `pgid` is running."""
    if pgid <= 0:
        return False
    child = _CHILDREN.get(pgid)
    if child is not None:
        child.poll()
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[-1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(stat)
    return bool(members)


def _belongs_to(pid: int, directory: Path) -> bool:
    # Guard against a recycled pid: only signal a process whose command line names this instance.
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        environ = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
    except OSError:
        return False
    return str(directory) in cmdline or str(directory) in environ


def terminate_group(pgid: int, timeout: float = STOP_TIMEOUT) -> bool:
    """SIGTERM a process group, wait, then SIGKILL what is left; return True when it was running."""
    if not group_alive(pgid):
        _CHILDREN.pop(pgid, None)
        return False
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and group_alive(pgid):
        time.sleep(0.2)
    if group_alive(pgid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and group_alive(pgid):
            time.sleep(0.1)
    child = _CHILDREN.pop(pgid, None)
    if child is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=5)
    return True


# ---------------------------------------------------------------------------------------------
# State.


def read_state(engine: str, name: str, root: Path | None = None) -> Instance | None:
    """Return the recorded state of an instance, or None."""
    path = instance_dir(engine, name, root) / "state.json"
    try:
        data = json.loads(path.read_text())
        return Instance(**data)
    except (OSError, ValueError, TypeError):
        return None


def _write_state(instance: Instance) -> None:
    path = Path(instance.directory) / "state.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(instance), indent=2) + "\n")
    tmp.replace(path)


def is_running(instance: Instance) -> bool:
    """Return True when the instance's processes are still alive."""
    return group_alive(instance.pgid) and _belongs_to(instance.pgid, Path(instance.directory))


# ---------------------------------------------------------------------------------------------
# Health.


def cluster_health(url: str, timeout: float = 2.0) -> str | None:
    """Return the cluster health status ("green", "yellow", "red") or None when not answering."""
    try:
        resp = requests.get(f"{url}/_cluster/health", params={"timeout": "1s"}, timeout=timeout)
    except requests.RequestException:
        return None
    if resp.status_code not in (200, 408):
        return None
    try:
        return str(resp.json().get("status"))
    except ValueError:
        return None


def _wait_healthy(
    instance: Instance, proc: subprocess.Popen[bytes], timeout: float, progress: Progress
) -> None:
    deadline = time.monotonic() + timeout
    last_note = 0.0
    directory = Path(instance.directory)
    while True:
        code = proc.poll()
        if code is not None:
            raise StartupError(
                f"{instance.engine} exited with code {code} before it became healthy",
                hint=f"read {directory / 'logs'} (console.log and {instance.server_log.name})",
                log_tail=log_tail(directory, instance.engine, instance.name),
            )
        status = cluster_health(instance.url)
        if status in ("green", "yellow"):
            return
        now = time.monotonic()
        if now >= deadline:
            raise StartupError(
                f"{instance.engine} at {instance.url} did not become healthy within {timeout:.0f}s "
                f"(last health: {status or 'no answer'})",
                hint=f"raise --timeout on a slow machine, or read {instance.server_log}",
                log_tail=log_tail(directory, instance.engine, instance.name),
            )
        if now - last_note > 10:
            progress(f"{instance.engine}: waiting for {instance.url} (health: {status or 'no answer yet'})")
            last_note = now
        time.sleep(0.5)


# ---------------------------------------------------------------------------------------------
# Public API.


def _prepare_config(
    spec: EngineSpec, install: Install, directory: Path, settings: dict[str, str], heap: str
) -> Path:
    conf = directory / "config"
    if conf.exists():
        shutil.rmtree(conf)
    shutil.copytree(install.home / "config", conf)
    (conf / spec.config_file).write_text(settings_yaml(settings))
    options_dir = conf / "jvm.options.d"
    options_dir.mkdir(exist_ok=True)
    (options_dir / "dac.options").write_text("\n".join(jvm_options(heap, os.geteuid() == 0)) + "\n")
    return conf


def _stop_at_exit() -> None:
    for engine, name, root in list(_STOP_AT_EXIT):
        with contextlib.suppress(Exception):
            stop(engine, name, root=Path(root))


atexit.register(_stop_at_exit)


def start(
    engine: str,
    *,
    name: str = "default",
    http_port: int | None = None,
    transport_port: int | None = None,
    heap: str = DEFAULT_HEAP,
    timeout: float = DEFAULT_TIMEOUT,
    root: Path | None = None,
    progress: Progress = _quiet,
    stop_at_exit: bool = False,
    replace: bool = False,
    extra_settings: dict[str, str] | None = None,
    plugin_dir: Path | None = None,
) -> Instance:
    """Start (or return the already running) instance `name` of `engine` and wait until it is healthy.

    `plugin_dir` (OpenSearch only) adds the plugin zips there to the install; an instance already
    running from another install (without them, say) is restarted from the right one.
    """
    spec = get_engine(engine)
    root = root or cache_dir()
    directory = instance_dir(engine, name, root)
    install = assemble(spec, root=root, progress=progress, plugin_dir=plugin_dir)
    previous = read_state(engine, name, root)
    if previous is not None and is_running(previous):
        same_install = Path(previous.home) == install.home
        if not same_install:
            progress(f"{engine} '{name}' runs from {previous.home}; restarting it from {install.home}")
        elif not replace and cluster_health(previous.url) in ("green", "yellow"):
            progress(f"{engine} '{name}' is already running at {previous.url}")
            if stop_at_exit:
                _STOP_AT_EXIT.add((engine, name, str(root)))
            return previous
        progress(f"{engine} '{name}': stopping the previous instance (pid {previous.pid})")
        terminate_group(previous.pgid)

    java = find_java(spec)
    http, transport = choose_ports(spec, http_port, transport_port)

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "logs").mkdir(exist_ok=True)
    (directory / "data").mkdir(exist_ok=True)
    settings = server_settings(spec, name=name, http_port=http, transport_port=transport, directory=directory)
    settings.update(extra_settings or {})
    conf = _prepare_config(spec, install, directory, settings, heap)
    pid_file = directory / "server.pid"
    pid_file.unlink(missing_ok=True)
    url = f"http://{HOST}:{http}"
    progress(
        f"{engine} {spec.version}: starting on {url} with Java {java.version} ({java.home}), heap {heap}"
    )
    started = time.time()
    with (directory / "logs" / "console.log").open("ab") as console:
        proc = subprocess.Popen(
            server_command(spec, install.home, pid_file),
            cwd=directory,
            env=server_env(spec, java, conf),
            stdin=subprocess.DEVNULL,
            stdout=console,
            stderr=subprocess.STDOUT,
            # Its own session: Ctrl-C in the terminal that ran `dac cluster up` must not kill it,
            # and stop() can signal the launcher and the server JVM together as one group.
            start_new_session=True,
        )
    _CHILDREN[proc.pid] = proc
    instance = Instance(
        engine=engine,
        name=name,
        version=spec.version,
        url=url,
        http_port=http,
        transport_port=transport,
        pid=proc.pid,
        pgid=proc.pid,
        directory=str(directory),
        home=str(install.home),
        java_home=str(java.home),
        java_version=java.version,
        heap=heap,
        started_at=started,
    )
    _write_state(instance)
    if stop_at_exit:
        _STOP_AT_EXIT.add((engine, name, str(root)))
    try:
        _wait_healthy(instance, proc, timeout, progress)
    except BaseException:
        # Never leave a half-started JVM behind: a failed or interrupted start stops it.
        terminate_group(instance.pgid, timeout=10)
        _STOP_AT_EXIT.discard((engine, name, str(root)))
        with contextlib.suppress(OSError):
            (directory / "state.json").unlink()
        raise
    with contextlib.suppress(OSError, ValueError):
        instance.pid = int(pid_file.read_text().strip())
    instance.ready_seconds = round(time.time() - started, 1)
    _write_state(instance)
    progress(f"{engine} {spec.version}: healthy at {url} after {instance.ready_seconds}s")
    return instance


def stop(
    engine: str,
    name: str = "default",
    *,
    root: Path | None = None,
    timeout: float = STOP_TIMEOUT,
    remove: bool = False,
) -> bool:
    """Stop an instance (SIGTERM, then SIGKILL after `timeout`); return True when one was running.

    With `remove`, the instance directory (config, data, logs) is deleted afterwards.
    """
    root = root or cache_dir()
    _STOP_AT_EXIT.discard((engine, name, str(root)))
    instance = read_state(engine, name, root)
    if instance is None:
        if remove:
            shutil.rmtree(instance_dir(engine, name, root), ignore_errors=True)
        return False
    was_running = False
    if group_alive(instance.pgid) and _belongs_to(instance.pgid, Path(instance.directory)):
        was_running = terminate_group(instance.pgid, timeout)
    # The server JVM may have left the launcher's group (it should not, but a stray JVM is the
    # one thing this module must never leave behind).
    if (
        instance.pid != instance.pgid
        and pid_alive(instance.pid)
        and _belongs_to(instance.pid, Path(instance.directory))
    ):
        was_running = True
        with contextlib.suppress(ProcessLookupError):
            os.kill(instance.pid, signal.SIGKILL)
    with contextlib.suppress(OSError):
        (Path(instance.directory) / "state.json").unlink()
    with contextlib.suppress(OSError):
        (Path(instance.directory) / "server.pid").unlink()
    if remove:
        shutil.rmtree(instance.directory, ignore_errors=True)
    return was_running


def list_instances(root: Path | None = None) -> list[tuple[str, str]]:
    """Return (engine, name) of every instance directory in the cache."""
    base = (root or cache_dir()) / "instances"
    found = []
    for path in sorted(base.glob("*-*")) if base.is_dir() else []:
        engine, _, name = path.name.partition("-")
        if engine in ("opensearch", "elasticsearch") and name:
            found.append((engine, name))
    return found


def reap_orphans(prefix: str, root: Path | None = None) -> list[str]:
    """Stop and remove instances named `<prefix><pid>` whose owning process `pid` is gone."""
    reaped = []
    for engine, name in list_instances(root):
        if not name.startswith(prefix):
            continue
        owner = name[len(prefix) :]
        if owner.isdigit() and not pid_alive(int(owner)):
            stop(engine, name, root=root, remove=True)
            reaped.append(f"{engine}-{name}")
    return reaped


def status(
    engine: str, name: str = "default", *, root: Path | None = None, plugin_dir: Path | None = None
) -> dict:
    """Return engine, url, version, health, plugins and modules of an instance.

    `plugins` are the installed plugins by descriptor name: the running node's, or else those of
    the install `start` would use (with the zips of `plugin_dir`).
    """
    spec = get_engine(engine)
    root = root or cache_dir()
    instance = read_state(engine, name, root)
    plugin_set = plugin_set_key(read_plugin_dir(plugin_dir, spec)) if plugin_dir is not None else None
    install = load_install(spec, root, plugin_set)
    result: dict = {
        "engine": engine,
        "name": name,
        "running": False,
        "url": None,
        "version": spec.version,
        "health": None,
        "plugins": install.plugins if install else [],
        "modules": install.manifest.get("modules", []) if install else [],
        "missing_plugins": install.missing_plugins if install else [],
        "assembled": install is not None,
    }
    if instance is None or not is_running(instance):
        return result
    result.update(
        running=True,
        url=instance.url,
        pid=instance.pid,
        http_port=instance.http_port,
        transport_port=instance.transport_port,
        java_version=instance.java_version,
        directory=instance.directory,
        log=str(instance.server_log),
    )
    result["health"] = cluster_health(instance.url)
    try:
        resp = requests.get(f"{instance.url}/_nodes/_local/plugins", timeout=5)
        resp.raise_for_status()
        node = next(iter(resp.json()["nodes"].values()))
        result["version"] = node.get("version", result["version"])
        result["plugins"] = sorted(p["name"] for p in node.get("plugins", []))
        result["modules"] = sorted(m["name"] for m in node.get("modules", []))
    except (requests.RequestException, ValueError, KeyError, StopIteration):
        pass
    return result
