"""The CAS reconstruction answer (`GET /v1/reconstructions/{file_hash}`), checked before anything trusts it.

    {"offset_into_first_range": n,
     "terms": [{"hash": xorb, "unpacked_length": n, "range": {"start": i, "end": j}}],   chunk indices, end exclusive
     "fetch_info": {xorb: [{"range": {"start", "end"}, "url": u, "url_range": {"start", "end"}}]}}  bytes inclusive

A term says: chunks [start, end) of a xorb, `unpacked_length` bytes once decoded, come next in the file. A fetch
entry says where a signed URL serves a run of a xorb's chunks, and at which bytes of it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from hfcache.cache.names import XetHash
from hfcache.errors import EndpointError, UnsafePath
from hfcache.xet.chunks import MAX_CHUNK

MAX_XORB_BYTES = 128 * 1024 * 1024  # xet-core caps a xorb at 64 MiB (and 8192 chunks): twice that is hostile
MAX_RECON_BYTES = 32 * 1024 * 1024  # a 50 GB file of whole xorbs is ~1 MB of JSON; a fragmented one a few


@dataclass(frozen=True)
class Term:
    xorb: str
    start: int
    end: int  # exclusive
    length: int  # bytes once decoded

    @property
    def chunks(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class FetchEntry:
    xorb: str
    start: int
    end: int  # exclusive chunk index
    url: str
    url_start: int
    url_end: int  # inclusive byte

    def covers(self, term: Term) -> bool:
        return self.xorb == term.xorb and self.start <= term.start and term.end <= self.end

    @property
    def key(self) -> tuple[str, int, int]:
        return self.xorb, self.start, self.end


@dataclass(frozen=True)
class Reconstruction:
    offset: int
    terms: list[Term]
    fetch: dict[str, list[FetchEntry]]

    @property
    def size(self) -> int:
        return sum(t.length for t in self.terms) - self.offset

    def entry_for(self, term: Term) -> FetchEntry | None:
        for e in self.fetch.get(term.xorb, ()):
            if e.covers(term):
                return e
        return None


def _int(v: object, what: str) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise ValueError(f"{what} {v!r} is not a non-negative integer")
    return v


def _range(d: object, what: str) -> tuple[int, int]:
    if not isinstance(d, dict):
        raise ValueError(f"{what} is not an object")
    return _int(d.get("start"), f"{what}.start"), _int(d.get("end"), f"{what}.end")


def parse(data: bytes, source: str) -> Reconstruction:
    """Raises `EndpointError` naming `source` for anything that is not a sane reconstruction."""
    try:
        doc = json.loads(data)
        if not isinstance(doc, dict):
            raise ValueError("not an object")
        offset = _int(doc.get("offset_into_first_range", 0), "offset_into_first_range")
        terms = []
        for t in doc.get("terms") or []:
            start, end = _range(t.get("range"), "term range")
            length = _int(t.get("unpacked_length"), "unpacked_length")
            if end <= start or length > (end - start) * MAX_CHUNK:
                raise ValueError(f"term of {end - start} chunks and {length} bytes")
            terms.append(Term(XetHash(t.get("hash")), start, end, length))
        fetch: dict[str, list[FetchEntry]] = {}
        for xorb, entries in (doc.get("fetch_info") or {}).items():
            xorb = XetHash(xorb)
            for e in entries:
                start, end = _range(e.get("range"), "fetch range")
                ustart, uend = _range(e.get("url_range"), "url_range")
                url = e.get("url")
                if not isinstance(url, str) or not url.startswith(("http://", "https://")):
                    raise ValueError(f"xorb URL {url!r}")
                if end <= start or uend < ustart or uend - ustart + 1 > MAX_XORB_BYTES:
                    raise ValueError(f"fetch entry of chunks {start}-{end}, bytes {ustart}-{uend}")
                fetch.setdefault(xorb, []).append(FetchEntry(xorb, start, end, url, ustart, uend))
        if terms and offset >= terms[0].length:
            raise ValueError("offset_into_first_range beyond the first term")
    except (ValueError, TypeError, AttributeError, UnsafePath, RecursionError) as e:
        raise EndpointError(f"{source} sent a reconstruction hfcache cannot use: {e}") from None
    return Reconstruction(offset, terms, fetch)
