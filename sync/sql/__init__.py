"""The rules compiled to set-based SQL for whole populations.

``compiler`` (with ``expr`` and ``timeline``) writes the query; ``evaluator``
runs it, streams and decodes the rows. The parity suite keeps it equal to
the engine.
"""
