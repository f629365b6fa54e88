"""Mailchimp.

Talking to Mailchimp: ``client`` (the official client and its settings),
``answers`` (classification of every outcome), ``caller`` (retries, fencing),
``batches`` (``/batches`` jobs), ``audience`` (the checks of ``mailsync
check``). Pushing: ``sink`` runs a push, phase by phase: ``push_plan`` (the
difference), ``merge_tags``, ``subscribe``, ``tags_events`` with
``event_intents``, sending through ``operations`` and recording what was
accepted through ``recording`` and the ``ledger`` contract; ``dryrun`` only
writes the plan. ``changes``, ``webhooks`` and ``reconciliation`` bring back
what changed on Mailchimp's side; ``redaction`` keeps the API key out of
every text.
"""
