"""Benchmarks of the course's claims: transfer learning is fast, needs little data, beats training from
scratch, and the package's cached-features path is measurably faster than the textbook loop.

``python -m benchmarks`` (``make bench``) runs them all and writes ``benchmarks/results/``
(results.md, results.json, benchmarks.png); ``--only head,course`` runs a subset, ``--tiny`` runs
the same code on a tiny synthetic backbone and image folder in seconds (the tests do this).
Every benchmark function takes its model and data as parameters.
"""
