"""Rendering: rich tables and progress, and JSON, apart from the work that produced the results.

- `console`: progress bars, timers, `print_json`, download and snapshot results.
- `verify`: verify reports (terminal, JSON, JUnit) and lock summaries.
- `scan`: scan tables and reclaim plans.
"""
