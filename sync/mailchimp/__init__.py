"""Mailchimp.

``client`` is the official client with settings, answer classification and
retries; ``sink`` pushes the difference and records what was accepted
through the ``ledger`` contract; ``changes``, ``webhooks`` and
``reconciliation`` bring back what changed on Mailchimp's side;
``redaction`` keeps the API key out of every text.
"""
