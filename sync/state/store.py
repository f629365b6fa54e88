"""The state store: mailsync's memory between cycles, on SQLite or PostgreSQL.

It remembers, per entity, the last evaluation (status, the base state and when
it was entered, ``next_change_at`` so the daemon only re-evaluates entities
whose status can have moved) and the re-initialisation baseline; per Mailchimp
member, what Mailchimp last ACCEPTED (merge values, active managed tags), the
pushes that failed and the events already sent; and, for the daemon, cycles and
watermarks.

It implements ``sync.mailchimp.ledger.PushLedger`` for the sink. SQLite (a file) is the
default; PostgreSQL is reached with a ``postgresql+psycopg://`` URL and may be
put in a schema of its own. The schema is created by the versioned ``.sql``
files in ``sync/state/migrations/`` (applied in order by ``sync.state.migrate``,
recorded in ``schema_version``); the ``Table`` objects of ``sync.state.tables``
only describe it for SQLAlchemy Core queries. Writes are bulk: one transaction
per call, rows sent with executemany / ``INSERT .. ON CONFLICT``.

``StateStore`` is the one object callers use; each concern is a module of
its own:

- ``sync.state.base``: the connection, migrations and bulk writes;
- ``sync.state.entities``: evaluations (``links``: entities depending on others);
- ``sync.state.baselines``: re-initialisation baselines;
- ``sync.state.ledger``: what Mailchimp accepted, failures, address moves;
- ``sync.state.events``: events sent and event intents;
- ``sync.state.jobs``: ``/batches`` jobs left running, until collected;
- ``sync.state.cycles``: the daemon's cycles and watermarks;
- ``sync.state.mailchimp_side``: what Mailchimp's side says (statuses,
  webhooks, audience problems).
"""

from __future__ import annotations

from sync.state.baselines import BaselineStore
from sync.state.cycles import CycleStore
from sync.state.entities import EntityStore
from sync.state.events import EventStore
from sync.state.jobs import JobStore
from sync.state.ledger import LedgerStore
from sync.state.links import LinkStore
from sync.state.mailchimp_side import MailchimpSideStore


class StateStore(
    EntityStore,
    LinkStore,
    BaselineStore,
    LedgerStore,
    EventStore,
    JobStore,
    CycleStore,
    MailchimpSideStore,
):
    """The SQL state store. Call ``migrate()`` once before use (idempotent)."""
