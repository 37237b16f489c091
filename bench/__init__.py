"""Benchmarks for rlm-mcp: ``python -m bench <name> [--quick]``.

Not part of the test suite and never run in CI: they take minutes, need a few GB of RAM and
their absolute times depend on whatever else the machine is doing. Each benchmark therefore
measures the thing it cares about and a baseline *in the same run*, reports medians of several
repetitions and prints ratios, which survive a noisy, shared machine far better than seconds.

Each run prints its figures and writes them as a markdown table to ``bench/results/<name>.md``
(``<name>-quick.md`` with ``--quick``), headed with the date, the Python version and the exact
command. Benchmarks:

- ``sandbox`` (``bench.bench_sandbox``): the sandbox's async API alone, no MCP.
- ``server`` (``bench.bench_server``): the real ``rlm-mcp`` server over stdio, driven by the SDK client.
"""

__all__: list[str] = []
