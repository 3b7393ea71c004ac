"""The core every stage stands on: the one lab config, progress events and cancel, registries, reading
and writing the lab's files, one writer per folder, the environment, metrics, run folders, what
each stage returns, and detached jobs.

Modules, in the order data flows through them: ``config``, ``events``, ``registry``, ``files``,
``locks``, ``environment``, ``metrics``, ``results``, ``jobs``, ``runs``."""
