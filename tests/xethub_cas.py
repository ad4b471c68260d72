"""The CAS side of tests/xethub.py: reconstructions (v1, and v2 when asked), signed xorb GETs, xorb and shard
uploads, global-dedup queries."""

from __future__ import annotations

import time

from tests.xetcas_format import reconstruct
from tests.xethub_http import HEX64, BaseRoutes, Handler, Reply, parse_range


class CasRoutes(BaseRoutes):
    def cas(self, h: Handler, parts: list[str], query: dict[str, str]) -> None:
        hub = self.hub
        if parts[:1] == ["xorb"] and len(parts) == 2 and h.command in ("GET", "HEAD"):
            return self.xorb_get(h, parts[1], query)
        if parts == ["v1", "telemetry"]:
            raise Reply(200, {})
        self.cas_auth(h)
        if parts[1:2] == ["reconstructions"] and len(parts) == 3 and h.command == "GET" and (
                parts[0] == "v1" or (parts[0] == "v2" and hub.reconstruction_v2)):
            return self.reconstruction(h, parts[2], parts[0])
        if parts[:2] == ["v1", "xorbs"] and len(parts) == 4 and HEX64.fullmatch(parts[3]):
            if h.command == "HEAD":
                raise Reply(200 if (hub.root / "xorbs" / parts[3]).is_file() else 404)
            if h.command == "POST":
                inserted = hub.store_xorb(parts[3], h.request_body)
                with hub.lock:
                    hub.stats.xorb_bytes_uploaded += len(h.request_body)
                raise Reply(200, {"was_inserted": inserted})
        if parts == ["v1", "shards"] and h.command == "POST":
            hub.store_shard(h.request_body)
            with hub.lock:
                hub.stats.shards_uploaded += 1
            raise Reply(200, {"result": 1})
        if parts[:2] == ["v1", "chunks"] and len(parts) == 4 and h.command == "GET":
            with hub.lock:
                hub.stats.dedup_queries += 1
                name = hub.chunk_shard.get(parts[3])
            if name is None:
                raise Reply(404, b"Shard not found")
            raise Reply(200, (hub.root / "shards" / name).read_bytes(), {"Content-Type": "application/octet-stream"})
        raise Reply(404, {"error": "not implemented by the emulator"})

    def reconstruction(self, h: Handler, file_hash: str, version: str) -> None:
        """v1: `fetch_info` {xorb: [{range, url, url_range}]}, one URL per merged range; v2: `xorbs` {xorb: [{url,
        ranges: [{chunks, bytes}]}]}, one URL per xorb, fetched with a multi-range `Range` (multipart answer)."""
        hub = self.hub
        with hub.lock:
            hub.stats.reconstructions += 1
            hub.stats.reconstruction_ranges.append(h.headers.get("Range"))
            segments = hub.files.get(file_hash)
        if hub.faults.take("reconstruction_401"):
            raise Reply(401, {"error": "token expired (fault)"})
        if segments is None:
            raise Reply(404, {"error": "file not found"})
        size = sum(s.unpacked for s in segments)
        key = "fetch_info" if version == "v1" else "xorbs"
        if size == 0:
            raise Reply(200, {"offset_into_first_range": 0, "terms": [], key: {}})
        start, end = parse_range(h.headers.get("Range"), size) or (0, size - 1)
        offset, terms, fetches = reconstruct(segments, hub.chunks_of, start, end + 1)
        exp = int(time.time() + hub.faults.xorb_url_ttl)
        fetch_info: dict[str, list] = {}
        for f in fetches:
            url = f"{hub.cas_url}/xorb/{f.xorb}?exp={exp}&sig={hub.sign('xorb', f.xorb, exp)}"
            chunks, span = {"start": f.chunk_start, "end": f.chunk_end}, {"start": f.byte_start, "end": f.byte_end - 1}
            if version == "v1":
                fetch_info.setdefault(f.xorb, []).append({"range": chunks, "url": url, "url_range": span})
            elif f.xorb in fetch_info:
                fetch_info[f.xorb][0]["ranges"].append({"chunks": chunks, "bytes": span})
            else:
                fetch_info[f.xorb] = [{"url": url, "ranges": [{"chunks": chunks, "bytes": span}]}]
        raise Reply(200, {"offset_into_first_range": offset,
                          "terms": [{"hash": t.xorb, "unpacked_length": t.unpacked,
                                     "range": {"start": t.chunk_start, "end": t.chunk_end}} for t in terms],
                          key: fetch_info})

    def xorb_get(self, h: Handler, xorb_hash: str, query: dict[str, str]) -> None:
        hub = self.hub
        with hub.lock:
            hub.stats.xorb_gets += 1
            hub.stats.xorb_requests.append((xorb_hash, h.headers.get("Range")))
        if hub.faults.take("expire_next_xorb"):
            raise Reply(403, b"<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>")
        self.check_signature("xorb", xorb_hash, query)
        path = hub.root / "xorbs" / xorb_hash
        if not HEX64.fullmatch(xorb_hash) or not path.is_file():
            raise Reply(404, b"not found")
        fault = next((f for f in ("reset", "corrupt", "stall") if hub.faults.take(f"{f}_next_xorb")), None)
        spec = h.headers.get("Range") or ""
        if "," in spec:
            return self.serve_ranges(h, path, spec, fault)
        return self.serve_file(h, path, path.stat().st_size, {}, "xorb_bytes", fault)
