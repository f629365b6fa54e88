"""The state store.

Tables and migrations, entity evaluations, what Mailchimp accepted (the
ledger), events sent, cycles and watermarks, the leader lease.
"""
