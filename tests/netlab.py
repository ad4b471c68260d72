"""A small network lab: nodes in network namespaces on one switch, processes run inside, everything removed after.

Each node is a namespace with `lo` up and an `eth0` (veth) whose peer sits on a bridge in the lab's own switch
namespace, with an address in a private /24. Nothing is added to the host's namespace, so labs of concurrent
runs never clash (names carry the pid), and a lab that crashes leaves only namespaces `sweep_stale` removes.

    with Lab() as lab:
        up = lab.node("up"); mirror = lab.node("mirror")
        p = up.popen(["python", "-m", "hfcache", "serve", "--host", up.ip, "--port", "80"])
        lab.wait_port(mirror, up.ip, 80, proc=p)      # connect from inside `mirror`
        up.limit("200mbit")                            # tbf on the node's egress
        up.link(False)                                 # the node drops off the network

Importable by tests (`from tests.netlab import Lab`) and scripts (`sys.path` insert of the checkout). Root only:
`available()` says why not, and tests skip with that reason.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
PREFIX = "hfcnet"
NETNS_DIR = Path("/var/run/netns")
CLONE_NEWNET = 0x40000000
SUBNET = "10.77.0"  # private, and only ever inside the lab's namespaces (never routed from the host)


class LabError(RuntimeError):
    pass


def available() -> str | None:
    """None when labs can be built here, else the reason (for pytest.skip)."""
    if os.name != "posix" or not hasattr(os, "geteuid"):
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "the `ip` tool (iproute2) is missing"
    probe = f"{PREFIX}{os.getpid()}-probe"
    try:
        _ip("netns", "add", probe)
    except LabError as e:
        return f"cannot create a network namespace: {e}"
    finally:
        with contextlib.suppress(LabError):
            _ip("netns", "del", probe)
    return None


def _ip(*args: str, ns: str | None = None) -> str:
    cmd = ["ip", *(["-n", ns] if ns else []), *args]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    if p.returncode != 0:
        raise LabError(f"{' '.join(cmd)}: {p.stderr.strip() or p.returncode}")
    return p.stdout


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale() -> list[str]:
    """Remove the namespaces of labs whose process is gone (a run killed before its teardown)."""
    removed = []
    if not NETNS_DIR.is_dir():
        return removed
    for entry in NETNS_DIR.iterdir():
        m = re.fullmatch(rf"{PREFIX}(\d+)-.+", entry.name)
        if m and not _alive(int(m.group(1))):
            with contextlib.suppress(LabError):
                _kill_ns_pids(entry.name)
                _ip("netns", "del", entry.name)
                removed.append(entry.name)
    return removed


def _kill_ns_pids(ns: str) -> None:
    """Every process still inside a namespace of ours (started by the lab, or by what the lab started)."""
    with contextlib.suppress(LabError):
        for pid in _ip("netns", "pids", ns).split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)


_libc = None


def _setns(path: Path) -> None:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns {path}: {os.strerror(err)}")
    finally:
        os.close(fd)


def in_netns(ns: str, fn: Callable[[], T], timeout: float = 120.0) -> T:
    """`fn()` run in a fresh thread moved into namespace `ns`: sockets it opens live there. The caller's own
    thread never changes namespace."""
    out: dict = {}

    def run() -> None:
        try:
            _setns(NETNS_DIR / ns)
            out["value"] = fn()
        except BaseException as e:  # handed to the caller
            out["error"] = e

    t = threading.Thread(target=run, daemon=True, name=f"netns-{ns}")
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise LabError(f"call in {ns} did not finish in {timeout:.0f} s")
    if "error" in out:
        raise out["error"]
    return out["value"]


@dataclass
class Node:
    lab: Lab
    name: str
    ns: str | None  # None: a loopback lab's node, the host's own namespace
    ip: str
    index: int
    extra_ips: list[str] = field(default_factory=list)

    def popen(self, args: Sequence[str], **kw) -> subprocess.Popen:
        """Start a process inside the node, in its own process group (the lab kills the group at teardown)."""
        prefix = ["ip", "netns", "exec", self.ns] if self.ns else []
        p = subprocess.Popen([*prefix, *args], start_new_session=True, **kw)
        self.lab._procs.append(p)
        return p

    def run(self, args: Sequence[str], timeout: float = 120, capture_output: bool = False,
            **kw) -> subprocess.CompletedProcess:
        if capture_output:
            kw.update(stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        p = self.popen(args, **kw)
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.lab.kill(p)
            raise
        return subprocess.CompletedProcess(p.args, p.returncode, out, err)

    def add_ip(self) -> str:
        """A second address on the node (another origin for the same server, like the Hub's CDN host)."""
        if self.ns is None:
            self.extra_ips.append("localhost")  # another origin for the same loopback server
            return "localhost"
        ip = f"{SUBNET}.{100 + self.index}"
        _ip("addr", "add", f"{ip}/24", "dev", "eth0", ns=self.ns)
        self.extra_ips.append(ip)
        return ip

    def limit(self, rate: str | None, burst: str = "256kb", latency: str = "50ms") -> None:
        """Shape the node's egress with tbf (`rate` like "200mbit"); None removes the shaping."""
        self._need_ns("rate limits")
        with contextlib.suppress(LabError):
            _ip_tc(self.ns, "qdisc", "del", "dev", "eth0", "root")
        if rate:
            _ip_tc(self.ns, "qdisc", "add", "dev", "eth0", "root", "tbf", "rate", rate, "burst", burst,
                   "latency", latency)

    def link(self, up: bool) -> None:
        """Take the node off the network (its peers' packets go nowhere) or back on."""
        self._need_ns("taking a node off the network")
        _ip("link", "set", "eth0", "up" if up else "down", ns=self.ns)

    def call(self, fn: Callable[[], T], timeout: float = 120.0) -> T:
        return in_netns(self.ns, fn, timeout) if self.ns else fn()

    def _need_ns(self, what: str) -> None:
        if self.ns is None:
            raise LabError(f"{what} need a network-namespace lab (root)")


def _ip_tc(ns: str, *args: str) -> None:
    p = subprocess.run(["ip", "netns", "exec", ns, "tc", *args], capture_output=True, text=True, timeout=30)
    if p.returncode != 0:
        raise LabError(f"tc {' '.join(args)} in {ns}: {p.stderr.strip()}")


class Lab:
    """Namespaces on one bridge; `close()` (or leaving the `with`) kills every process and deletes everything.

    `loopback=True` builds no namespace: every node is 127.0.0.1 (distinct ports are the caller's business), so
    the same test or benchmark runs without root, minus rate limits and partitions."""

    def __init__(self, tag: str | None = None, loopback: bool = False) -> None:
        self.tag = f"{PREFIX}{os.getpid()}-{tag or 'lab'}"[:40]
        self.loopback = loopback
        self.nodes: dict[str, Node] = {}
        self._procs: list[subprocess.Popen] = []
        self._namespaces: list[str] = []
        self._switch = f"{self.tag}-sw"
        if loopback:
            return
        try:
            self._make_ns(self._switch)
            _ip("link", "add", "br0", "type", "bridge", ns=self._switch)
            _ip("link", "set", "br0", "up", ns=self._switch)
        except BaseException:
            self.close()
            raise

    def _make_ns(self, ns: str) -> None:
        _ip("netns", "add", ns)
        self._namespaces.append(ns)
        _ip("link", "set", "lo", "up", ns=ns)

    def node(self, name: str) -> Node:
        index = len(self.nodes) + 1
        if index > 90:
            raise LabError("a lab holds at most 90 nodes")
        if self.loopback:
            node = Node(self, name, None, "127.0.0.1", index)
            self.nodes[name] = node
            return node
        ns = f"{self.tag}-{name}"
        self._make_ns(ns)
        peer = f"p{index}"
        _ip("link", "add", "eth0", "type", "veth", "peer", "name", peer, "netns", self._switch, ns=ns)
        _ip("link", "set", peer, "master", "br0", "up", ns=self._switch)
        ip = f"{SUBNET}.{index}"
        _ip("addr", "add", f"{ip}/24", "dev", "eth0", ns=ns)
        _ip("link", "set", "eth0", "up", ns=ns)
        node = Node(self, name, ns, ip, index)
        self.nodes[name] = node
        return node

    def wait_port(self, node: Node, host: str, port: int, timeout: float = 60.0,
                  proc: subprocess.Popen | None = None) -> None:
        """Until a TCP connect from inside `node` to host:port succeeds (fails early if `proc` exits)."""

        def probe() -> bool:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.settimeout(2)
                try:
                    s.connect((host, port))
                except OSError:
                    return False
                return True

        deadline = time.monotonic() + timeout
        while True:
            if node.call(probe, timeout=10):
                return
            if proc is not None and proc.poll() is not None:
                raise LabError(f"{host}:{port} never listened: the process exited with {proc.returncode}")
            if time.monotonic() > deadline:
                raise LabError(f"{host}:{port} not listening after {timeout:.0f} s")
            time.sleep(0.05)  # between connection attempts only; the event is the accepted connect

    def kill(self, proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
        """Kill a process the lab started, and its group."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)

    def close(self) -> None:
        for p in reversed(self._procs):
            self.kill(p)
        for ns in reversed(self._namespaces):
            _kill_ns_pids(ns)
            with contextlib.suppress(LabError):
                _ip("netns", "del", ns)
        self._namespaces.clear()
        self._procs.clear()

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def free_port() -> int:
    """A port nothing on the host listens on now (for loopback labs; in a namespace any port is free)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
