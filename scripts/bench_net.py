"""Servers and links for scripts/bench_download.py: the project's Hub behind nginx (which serves the LFS blobs
the Hub redirects to), a TCP proxy that delays every request (so every answer) by a fixed time, and a link
between two network namespaces limited with `tc tbf` (this kernel has no netem: the delay is the proxy's).

    python scripts/bench_net.py proxy LISTEN_HOST LISTEN_PORT TARGET_HOST TARGET_PORT DELAY_MS
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent
NGINX = """worker_processes 2;
daemon off;
pid {work}/nginx-{tag}.pid;
error_log {work}/nginx-{tag}-error.log;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  keepalive_timeout 120s;
  client_body_temp_path {work}/nginx-tmp;
  proxy_temp_path {work}/nginx-tmp;
  server {{
    listen {listen};
    location /cdn/ {{ alias {cdn}/; disable_symlinks off; }}
    location / {{
      proxy_pass http://127.0.0.1:{hub_port};
      proxy_set_header Host $http_host;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }}
  }}
}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(prefix: list[str], host: str, port: int, timeout: float = 60.0) -> None:
    """Until something accepts connections on host:port (in the namespace of `prefix`), at most `timeout` s."""
    probe = f"import socket; socket.create_connection(({host!r}, {port}), timeout=1).close()"
    deadline = time.monotonic() + timeout
    while subprocess.run([*prefix, sys.executable, "-c", probe], capture_output=True).returncode != 0:
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: nothing listens on {host}:{port}")
        time.sleep(0.1)


class Link:
    """Two namespaces joined by a veth pair, each end limited to `rate_mbit` by tbf. Server side 10.77.0.1 (and
    10.77.0.3, the CDN's other host name), client side 10.77.0.2."""

    SERVER, CDN, CLIENT = "10.77.0.1", "10.77.0.3", "10.77.0.2"

    def __init__(self, rate_mbit: int) -> None:
        self.rate = rate_mbit
        tag = f"{os.getpid() % 100000}"
        self.server_ns, self.client_ns = f"hfbs{tag}", f"hfbc{tag}"
        self.server_prefix = ["ip", "netns", "exec", self.server_ns]
        self.client_prefix = ["ip", "netns", "exec", self.client_ns]

    def __enter__(self) -> Link:
        s, c, veth_s, veth_c = self.server_ns, self.client_ns, f"{self.server_ns}v", f"{self.client_ns}v"
        burst = max(64 * 1024, self.rate * 1_000_000 // 8 // 100)  # 10 ms of the rate
        try:
            for cmd in ([["ip", "netns", "add", s], ["ip", "netns", "add", c],
                         ["ip", "link", "add", veth_s, "type", "veth", "peer", "name", veth_c],
                         ["ip", "link", "set", veth_s, "netns", s], ["ip", "link", "set", veth_c, "netns", c],
                         ["ip", "-n", s, "addr", "add", f"{self.SERVER}/24", "dev", veth_s],
                         ["ip", "-n", s, "addr", "add", f"{self.CDN}/24", "dev", veth_s],
                         ["ip", "-n", c, "addr", "add", f"{self.CLIENT}/24", "dev", veth_c]]
                        + [["ip", "-n", ns, "link", "set", dev, "up"] for ns, dev in
                           ((s, veth_s), (c, veth_c), (s, "lo"), (c, "lo"))]
                        + [["tc", "-n", ns, "qdisc", "add", "dev", dev, "root", "tbf", "rate", f"{self.rate}mbit",
                            "burst", str(burst), "latency", "50ms"] for ns, dev in ((s, veth_s), (c, veth_c))]):
                subprocess.run(cmd, check=True, capture_output=True)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        for ns in (self.server_ns, self.client_ns):  # the veth pair goes with its namespaces
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


class Servers:
    """The Hub (`hfcache serve`, every answer delayed by `latency_ms`) and nginx in front of it, serving the
    blobs of `cdn` at `/cdn/<sha256>`, where the Hub redirects LFS downloads. With a `link`, both run in its
    server namespace behind the delaying proxy (`delay_ms` per request), which is what the client reaches."""

    def __init__(self, work: Path, sources: dict[str, Path], cdn: Path, latency_ms: float = 0,
                 link: Link | None = None, delay_ms: float = 0) -> None:
        self.work, self.sources, self.cdn, self.latency, self.link, self.delay = (work, sources, cdn, latency_ms,
                                                                                  link, delay_ms)
        self.procs: list[subprocess.Popen] = []

    def _start(self, cmd: list[str], **kw) -> subprocess.Popen:
        proc = subprocess.Popen([*(self.link.server_prefix if self.link else []), *cmd], **kw)
        self.procs.append(proc)
        return proc

    def __enter__(self) -> Servers:
        prefix = self.link.server_prefix if self.link else []
        try:
            hub_port = 9001 if self.link else free_port()
            front = 9002 if self.link else free_port()
            cdn_host = Link.CDN if self.link else "localhost"
            args = [str(BIN / "hfcache"), "serve", "--host", "127.0.0.1", "--port", str(hub_port), "-q",
                    "--cdn-host", cdn_host, "--latency-ms", str(self.latency)]
            for name, folder in self.sources.items():
                args += ["--repo", f"org/{name}={folder}"]
            hub = self._start(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            if not hub.stdout.readline().strip():
                raise SystemExit("bench: the Hub did not start")
            (self.work / "nginx-tmp").mkdir(parents=True, exist_ok=True)
            tag = f"{os.getpid()}-{front}"
            conf = self.work / f"nginx-{tag}.conf"
            listen = f"0.0.0.0:{front}" if self.link else f"127.0.0.1:{front}"
            conf.write_text(NGINX.format(work=self.work, tag=tag, listen=listen, cdn=self.cdn, hub_port=hub_port))
            self._start(["nginx", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wait_port(prefix, "127.0.0.1", front)
            self.hub_url = f"http://127.0.0.1:{hub_port}"
            self.url = f"http://127.0.0.1:{front}"
            if self.link:  # the client reaches nginx through the delaying proxy, from the other namespace
                self._start([sys.executable, __file__, "proxy", "0.0.0.0", "9000", "127.0.0.1", str(front),
                             str(self.delay)])
                wait_port(prefix, "127.0.0.1", 9000)
                self.url = self.hub_url = f"http://{Link.SERVER}:9000"
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# -- the delaying proxy ----------------------------------------------------------------------------------------
async def _pipe_delayed(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    """Forward what the client sends, each piece `delay` s after it arrived (in order): every request, so every
    answer, comes `delay` later, and the answers' bytes flow at the link's rate."""
    queue: asyncio.Queue = asyncio.Queue()

    async def later() -> None:
        while (item := await queue.get()) is not None:
            due, data = item
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            writer.write(data)
            await writer.drain()
        writer.write_eof() if writer.can_write_eof() else None

    task = asyncio.ensure_future(later())
    try:
        while data := await reader.read(65536):
            queue.put_nowait((time.monotonic() + delay, data))
    finally:
        queue.put_nowait(None)
        await task


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(256 * 1024):
        writer.write(data)
        await writer.drain()
    if writer.can_write_eof():
        writer.write_eof()


async def _proxy(listen_host: str, listen_port: int, host: str, port: int, delay: float) -> None:
    async def handle(creader, cwriter) -> None:
        try:
            ureader, uwriter = await asyncio.open_connection(host, port)
        except OSError:
            cwriter.close()
            return
        try:
            await asyncio.gather(_pipe_delayed(creader, uwriter, delay), _pipe(ureader, cwriter))
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            for w in (cwriter, uwriter):
                w.close()

    server = await asyncio.start_server(handle, listen_host, listen_port, backlog=1024)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    if len(sys.argv) == 7 and sys.argv[1] == "proxy":
        _, _, lh, lp, th, tp, ms = sys.argv
        asyncio.run(_proxy(lh, int(lp), th, int(tp), float(ms) / 1000))
    else:
        raise SystemExit(__doc__)
