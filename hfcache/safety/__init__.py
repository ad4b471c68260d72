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
Modules: `sniff` (format by bytes), `pickles` (opcode walker), `archives` (zip, npz, npy), `tensors`
(safetensors), `gguf`, `keras`, `policy`, `result` (verdict types), `verdicts` (remembered verdicts), `check`.
"""
