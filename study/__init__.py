"""The multi-run layer, above ``training/`` and ``eval/`` (which deal with one run each).

spec (a study as a TOML file) -> runner (its missing training runs, evaluations and report, in
the order matching needs) -> engines (local, or Ray tasks) -> jobs (one run's training or
evaluation in a process of its own); sweep (``--mode sweep``; run names), matching, report
(``--mode report``) with its tables, claims, curves, protocol and earlier reports (report_prior);
status (``--status``). docs/studies.md is the user's guide.
"""
