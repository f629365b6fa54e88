"""The rules compiled to set-based SQL for whole populations.

``compiler`` assembles the query from its parts: ``population`` (the list
and its facts, with ``rollups``), ``keys`` and ``actions`` (entry by
actions), ``conditions`` (entry by conditions), ``timeline``, ``merge``
(merge fields' columns), over ``expr`` (conditions, instants) and ``inputs``
(sources' queries, bound parameters). ``compiled`` holds the statement and
decodes its rows; ``evaluator`` runs it and streams them. The parity suite
keeps it equal to the engine.
"""
