"""The cache model: the one owner of every path in a hub cache, and of the names that may become paths.

- `names`: value objects for names from outside (blob name, commit, revision, file path in a snapshot); each is
  checked once, where it enters, and cannot be built from a bad string.
- `layout`: `HubCache`, typed paths from checked names (blobs, refs, snapshots, `trees/`, `.no_exist`, `.locks`,
  partial files and their records, the shared xet store), atomic writes, locks and links; `RepoRef`.
- `paths`: the shapes those paths take, spelled once (`Folder`, partial-download names and roles via
  `partial_of`, staging names), and plain-string forms for `scan` and `reclaim`.
- `meta`: `FileMeta` (what the Hub says of a file) and `trees/<commit>.json` parsing, checked on the way in.
- `hashing`: the one hashing path (sha256, git blob sha1), streamed in bounded chunks.
- `partfile`: a resumable partial blob and the record of which bytes are really written (names from `paths`).
- `flock`: the per-blob lock taken with `flock` directly (the lock filelock and huggingface_hub take).
- `durable`: fsync before the renames that publish files, so a power loss leaves the old bytes or the new.
- `roots`: where every cache lives (HF_HOME, hub, datasets, modules, xet, assets, token).
- `lfs`: which files a git server stores in LFS, and a file's metadata from its bytes.
- `hfhub`: the one adapter for `huggingface_hub`'s private names (the shared blob store).
"""
