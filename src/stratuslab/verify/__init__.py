"""Continuous verification: watched repositories, a run per commit, verdicts, bisection, and
the notifications that tell people (docs/architecture.md, "Continuous verification")."""
