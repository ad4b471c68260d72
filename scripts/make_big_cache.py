"""Generate a synthetic HF_HOME whose hub cache looks like a big real one, cheaply: blobs are sparse files.

    .venv/bin/python scripts/make_big_cache.py /tmp/bigcache                 # 5,000 repos, 200,000 files
    .venv/bin/python scripts/make_big_cache.py /tmp/small --repos 50 --files 2000

Layout as huggingface_hub writes it: `hub/<type>s--<org>--<name>/{blobs,refs,snapshots,trees}`, relative
snapshot links (nested folders too), `trees/<commit>.json`, `.locks/<repo>/<etag>.lock` per blob and
`CACHEDIR.TAG`. A quarter of the repos have a second revision (a tag, or detached) sharing most blobs, so
revision accounting is exercised. Large weights are sparse (they cost no disk); small files hold real bytes and
real git-sha1 names (every repo has the same `.gitattributes`, as on the Hub). Names of sparse blobs are random
hashes, so `dedup`'s hash check would refuse them; `scan` does not read content.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
import time

GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.bin filter=lfs diff=lfs merge=lfs -text\n"
SMALL = ["config.json", "README.md", "tokenizer_config.json", "tokenizer/vocab.txt", "tokenizer/merges.txt",
         "generation_config.json", "special_tokens_map.json"]
TAG = ("Signature: 8a477f597d28d172789f06886806bc55\n# This file is a cache directory tag created by huggingface_hub.\n"
       "# For information about cache directory tags, see:\n#\thttps://bford.info/cachedir/\n")


def git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def _files_for(rng: random.Random, n: int) -> list[tuple[str, int, bool]]:
    """(path, size, is_lfs) for one revision: small real files, then sparse weight shards."""
    out: list[tuple[str, int, bool]] = [(".gitattributes", len(GITATTRIBUTES), False)]
    for name in SMALL[: max(0, min(len(SMALL), n - 2))]:
        out.append((name, rng.randint(50, 5000), False))
    shards = max(1, n - len(out))
    for i in range(shards):
        folder = "onnx/" if i % 7 == 6 else ""
        out.append((f"{folder}model-{i + 1:05d}-of-{shards:05d}.safetensors", rng.randint(10**6, 5 * 10**9), True))
    return out[:n]


def make_repo(hub: str, i: int, n_files: int, rng: random.Random, now: float) -> int:
    kind = "model" if i % 20 < 16 else "dataset" if i % 20 < 19 else "space"
    folder = f"{kind}s--org{i % 97}--repo-{i:06d}"
    root = os.path.join(hub, folder)
    for sub in ("blobs", "refs", "snapshots", "trees"):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    locks = os.path.join(hub, ".locks", folder)
    os.makedirs(locks, exist_ok=True)
    files = _files_for(rng, n_files)
    revisions = [("main", files)]
    if i % 4 == 0:  # a second revision: new config, same weights
        second = [(p, s + 1 if p == "config.json" else s, lfs) for p, s, lfs in files]
        revisions.append(("v1.0" if i % 8 == 0 else "", second))
    written = 0
    age = rng.uniform(0, 90 * 86400)
    for r, (ref, rev_files) in enumerate(revisions):
        commit = hashlib.sha1(f"{folder}@{r}".encode()).hexdigest()
        listing = {}
        for path, size, lfs in rev_files:
            if path == ".gitattributes":
                data, etag = GITATTRIBUTES, git_sha1(GITATTRIBUTES)
            elif lfs:
                data, etag = None, hashlib.sha256(f"{folder}/{path}".encode()).hexdigest()
            else:
                data = hashlib.sha256(f"{folder}/{path}/{size}".encode()).hexdigest().encode() * (size // 64 + 1)
                data = data[:size]
                etag = git_sha1(data)
            blob = os.path.join(root, "blobs", etag)
            if not os.path.exists(blob):
                fd = os.open(blob, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                try:
                    if data is None:
                        os.ftruncate(fd, size)  # sparse: apparent size, no blocks
                    else:
                        os.write(fd, data)
                finally:
                    os.close(fd)
                os.utime(blob, (now - age, now - age - 86400))
                open(os.path.join(locks, f"{etag}.lock"), "wb").close()
                written += 1
            link = os.path.join(root, "snapshots", commit, *path.split("/"))
            os.makedirs(os.path.dirname(link), exist_ok=True)
            os.symlink(os.path.relpath(blob, os.path.dirname(link)), link)
            info = {"size": size, "blob_id": git_sha1(data) if data is not None else hashlib.sha1(
                etag.encode()).hexdigest()}
            if lfs:
                info.update(lfs_sha256=etag, lfs_size=size)
            listing[path] = info
        with open(os.path.join(root, "trees", f"{commit}.json"), "w") as f:
            json.dump({"format_version": 1, "files": {p: listing[p] for p in sorted(listing)}}, f, indent=1)
        if ref:
            with open(os.path.join(root, "refs", ref), "w") as f:
                f.write(commit)
    return written


def make_cache(out: str, repos: int = 5000, files: int = 200_000, seed: int = 0) -> str:
    """Create `out/hub` (use `out` as HF_HOME); returns the hub cache path."""
    hub = os.path.join(out, "hub")
    os.makedirs(hub, exist_ok=True)
    with open(os.path.join(hub, "CACHEDIR.TAG"), "w") as f:
        f.write(TAG)
    rng = random.Random(seed)
    now = time.time()
    per_repo = max(1, files // max(1, repos))
    extra = files - per_repo * repos
    for i in range(repos):
        make_repo(hub, i, per_repo + (1 if i < extra else 0), rng, now)
    return hub


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", help="folder to create (used as HF_HOME)")
    ap.add_argument("--repos", type=int, default=5000)
    ap.add_argument("--files", type=int, default=200_000, help="snapshot files of the main revisions, in total")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if os.path.exists(os.path.join(args.out, "hub")):
        sys.exit(f"{args.out}/hub exists; pick a new folder")
    t = time.perf_counter()
    hub = make_cache(args.out, args.repos, args.files, args.seed)
    print(f"{hub}: {args.repos:,} repos, {args.files:,} files in {time.perf_counter() - t:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
