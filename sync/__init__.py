"""mailsync: derive lifecycle statuses from an application's database and keep
Mailchimp in sync with them.

The public surface is re-exported here; everything else is private.
"""

__version__ = "0.1.0"
