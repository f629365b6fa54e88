"""Running the sync.

``config`` (the operator's settings), ``cycle`` (derive, diff, push),
``runtime`` (``run_once``, the loop, rules reload), ``lock`` (one leader),
``metrics``, ``logs``, ``history`` and ``plan``.
"""
