"""``edgec ci``: every model x target of one config built, gated on budgets and reported.

A config (``edgec.toml``: :mod:`.config`) names the models, the targets and the budgets. A run
(:mod:`.runner`) builds each model x target row with the stages it shares with the other rows of
its model done once (:class:`edgec.pipeline.BuildSession`), in worker processes, and keeps each
row's build directory in a content-addressed cache (:mod:`.cache`). The budgets (:mod:`.gates`)
give each row its verdicts, also against a baseline (a previous run's JSON results); the results
document is written as JSON, JUnit XML and Markdown (:mod:`.reports`). :mod:`.shards` splits the
rows over the jobs of a CI matrix and merges their results.

Nothing here imports TensorFlow: only the worker processes that build do (:mod:`.worker`), so a
run whose rows are all cached never loads it.
"""

from __future__ import annotations

from edgec.ci.config import CiConfig, ConfigError, Row, load_config

__all__ = ["CiConfig", "ConfigError", "Row", "load_config"]
