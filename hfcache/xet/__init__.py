"""The Xet download path, as huggingface_hub 2.x with hf_xet takes it: files rebuilt from CAS chunks.

- `hashes`: chunk, merkle-node, xorb and file hashes (keyed BLAKE3, as xet-core's `merklehash`).
- `chunks`: a xorb byte range decoded into chunks (none, LZ4 frame, byte-grouping-4 + LZ4).
- `recon`: the CAS reconstruction answer, checked like any input from outside.
- `cas`: the read token (refreshed on expiry or a 401) and the CAS requests, through the transfer engine.
- `index`: which chunks are already on disk, in which file at which offset (dedup across files and revisions).
- `download`: one file rebuilt into its partial, resumable, checked against its Xet hash and LFS sha256.
- `store`: publishing into huggingface_hub's shared blob store, through its own functions.
"""
