"""Carrying a cache elsewhere: bundles (`export`/`import`), `relocate` and `convert`.

- `manifest`: the bundle manifest (`Manifest`, `Entry`), checked when read.
- `export`: `plan_export`, `export_bundle`.
- `importer`: `import_bundle`: stage and hash every payload, then publish with atomic renames.
- `container`: tar, tar.zst and folder containers, read and written as streams (tar headers capped).
- `jsonstream`: a large JSON object read item by item, so a hostile manifest or listing cannot balloon in memory.
- `trees`: a bundle's tree listings checked (names, agreement with its files) before anything is published.
- `relocate`: `relocate` moves a whole HF_HOME; `convert`: `convert_to_copies`, `convert_to_symlinks`.
- `crash`: the test hook that kills a run at a chosen step.
"""
