"""The application's database, read only.

``model`` is ``sources.yaml`` as a typed model, ``reader`` the read-only
sessions and streams of records (over ``sessions``, ``streams``, ``merge``,
``values``, ``report`` and ``changes``), ``check`` the probe of
``mailsync check``, ``rollups`` the cross-entity facts.
"""
