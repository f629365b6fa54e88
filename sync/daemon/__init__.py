"""Running the sync.

``config`` (the operator's settings); one cycle: ``cycle`` (which entities,
in which order) with its parts ``derive``, ``diff``, ``events``, ``push``,
``identities`` (``type_run`` what they share, ``cycle_summary`` what a cycle
did); ``runtime`` (what every cycle needs), ``clock``, ``once``
(``run_once``), ``serve`` (the loop), ``reload`` (rules reload),
``service`` (the ``mailsync run`` process), ``lock`` (one leader),
``metrics``, ``logs``, ``history``; and what commands do: ``plan``,
``reinit``, ``reports`` (explain, status, unsubscribes) and ``check``.
"""
