"""The engine: one entity at one instant.

``engine`` gives status, entry instants, merge fields, events and the next
change; ``members`` turns evaluations into the members Mailchimp receives;
``explain`` replays one entity's timeline; ``related`` reads the statuses
rollups count from the state store; ``ruletest`` runs the rules-test
files. Pure: the clock is always an argument.
"""
