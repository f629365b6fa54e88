"""The lifecycle dashboard: read-only pages over the state store, in a browser.

``mailsync dashboard`` serves them on its own; the daemon serves the same
pages beside ``/metrics``. Four pages: Lifecycle (the ladder drawing of
``sync.rules.graph_svg`` with live counts and flows), Trends (``sync.daemon.history``
drawn as charts), Person (``sync.evaluate.explain``'s timeline) and Operations.

* ``store``: the state store opened read-only, and the dashboard's queries;
* ``pages``: the HTML; ``charts``: the SVG line charts;
* ``app``: routes, access control, the WSGI server.
"""

from sync.dashboard.app import (
    Access,
    Background,
    Dashboard,
    People,
    check_bind,
    for_daemon,
    from_config,
    serve,
)
from sync.dashboard.store import ReadOnlyStore

__all__ = [
    "Access",
    "Background",
    "Dashboard",
    "People",
    "ReadOnlyStore",
    "check_bind",
    "for_daemon",
    "from_config",
    "serve",
]
