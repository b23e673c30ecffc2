"""Quarry's benchmark harness (``quarry bench quality|load|ingest|scale|report``).

Everything goes through the public HTTP API of a stack started as processes
(``services.launcher.Stack``), the way a user runs it; each figure is written to
``bench/results/*.json`` beside the floor or peer it is compared with, measured in the same
run, and ``docs/benchmarks.md`` is regenerated from those files.
"""
