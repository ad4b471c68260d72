"""Is it safe to load? Static checks of model files, by their bytes, against an allow list.

A checked hash proves the bytes are the Hub's, not that loading them is safe: pickles (`.bin`, `.pt`, `.ckpt`,
`.pkl`, joblib) run code when loaded. This package reads each file once, whatever it is named, and says `safe`,
`unknown`, `unsafe` or `critical`, with the exact imports a pickle makes.

Public functions:
  - `check.check_cache(cache, specs, policy=...)`  a cache (or some repos of it) -> `SafetyReport`
  - `check.check_paths(paths, policy=...)`         plain files or folders -> `SafetyReport`
  - `files.check_file(path, policy)`               one file -> `FileVerdict`
  - `policy.policy(allow=...)`                     the allow list in force (`--allow module.name`)
  - `remote.check_remote_headers(...)`             safetensors headers over two range requests, before a download
  - `workflow`: `inspect_target`, `SafetyRun` (verify --safety), `check_snapshot`, `precheck_headers`
  - `tally.tally(hub_scan, store)`                  what `scan` shows, from names and remembered verdicts only
Modules: `sniff` (format by bytes), `opcodes` (the pickle machine, read statically), `pickle_values`,
`pickles` (several pickles, legacy torch), `joblib_arrays`, `archives` (zip, npz, npy), `tensors` (safetensors),
`gguf`, `keras`, `files` (one file, dispatched by format), `policy` and `allowlist` (what may be imported),
`result` (verdict types), `verdicts` (remembered verdicts), `check`, `remote`, `tally`.
"""
