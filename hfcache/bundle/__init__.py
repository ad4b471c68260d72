"""Carrying a cache elsewhere: bundles (`export`/`import`), `relocate` and `convert`.

- `manifest`: the bundle manifest (`Manifest`, `Entry`), checked when read.
- `export`: `plan_export`, `export_bundle`.
- `importer`: `import_bundle`: stage and hash every payload, then publish with atomic renames.
- `container`: tar, tar.zst and folder containers, read and written as streams.
- `relocate`: `relocate` moves a whole HF_HOME; `convert`: `convert_to_copies`, `convert_to_symlinks`.
- `crash`: the test hook that kills a run at a chosen step.
"""
