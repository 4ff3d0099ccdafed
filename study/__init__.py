"""The multi-run layer, above ``training/`` and ``eval/`` (which deal with one run each).

spec (a study as a TOML file) -> checks (what it refuses before anything starts) -> runner (its
missing training runs, evaluations and report, in the order matching needs; one driver per root)
-> engines (local, or Ray tasks) -> jobs (typed records: one run's training, one run's evaluation
or the report, each in a process of its own). plan (the runs a report compares and each one's
matched epoch, decided once) -> evaluations (one run's evaluation: a job record and the function
that does it) -> report (``--mode report``: lays out what the evaluations found) with its tables,
verdicts (the claims' statistics), markdown, curves, protocol and earlier reports (report_prior);
sweep (``--mode sweep``; run names), matching, status (``--status``). docs/studies.md is the
user's guide.
"""
