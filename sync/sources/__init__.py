"""The application's database, read only.

``model`` is ``sources.yaml`` as a typed model, ``reader`` the read-only
sessions and streams of records, ``check`` the probe of ``mailsync check``,
``rollups`` the cross-entity facts.
"""
