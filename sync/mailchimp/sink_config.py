"""How the sink pushes: ``SinkConfig`` and the Mailchimp limits it is checked against."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from sync.exceptions import ConfigurationError
from sync.mailchimp.batches import BatchPolling

#: Mailchimp allows 10 simultaneous connections per key; more gives 429.
MAX_CONNECTIONS = 9
#: Members per batch-subscribe call (``POST /lists/{id}`` refuses more).
MAX_BATCH = 500
#: Operations per ``/batches`` job. Mailchimp sets no limit on a job's
#: operations; one job costs a start, its polls and one download whatever its
#: size, so large jobs keep the call count of a big push near constant. 5000
#: keeps a request body to a few megabytes and lets a very large push still
#: run as several jobs in parallel.
JOB_SIZE = 5000

SUBSCRIPTION_STATUSES = frozenset({"subscribed", "pending", "unsubscribed", "transactional"})


@dataclass(frozen=True)
class SinkConfig:
    #: Status given to members Mailchimp does not know yet. Existing members'
    #: status is never sent.
    status_if_new: str = "subscribed"
    max_connections: int = MAX_CONNECTIONS
    #: Members per batch-subscribe call (creation, phase 1).
    batch_size: int = MAX_BATCH
    #: Operations per ``/batches`` job (phase 2, tags, events). Larger jobs
    #: cost fewer calls; a job whose outcome is unknown leaves more events to
    #: reconcile (one ``GET …/events`` per member concerned).
    job_size: int = JOB_SIZE
    #: From this many operations on, use a ``/batches`` job instead of direct calls.
    bulk_threshold: int = 10
    use_batches: bool = True
    #: A permanent failure is retried with the same desired state after this.
    permanent_backoff: timedelta = timedelta(days=7)
    #: First back-off of a transient failure that outlived the in-run retries; doubles.
    transient_backoff: timedelta = timedelta(minutes=5)
    max_transient_backoff: timedelta = timedelta(days=1)
    #: ``is_syncing`` on tags/events: true would keep automations from firing.
    tags_is_syncing: bool = False
    events_is_syncing: bool = False
    #: An event whose outcome is unknown is looked up in Mailchimp only once
    #: this long has passed since it was POSTed, so that Mailchimp has listed it.
    event_settle: timedelta = timedelta(minutes=1)
    #: Sent with every create and update: Mailchimp enforces required merge
    #: fields on updates too, which would fail every later update of a member
    #: created before a field became required.
    skip_merge_validation: bool = True
    #: How long the audience's merge tags are trusted before being read again
    #: (one ``GET …/merge-fields``); a tag that comes back missing from an
    #: answer makes the next push read them at once.
    merge_fields_ttl: timedelta = timedelta(minutes=15)
    polling: BatchPolling = field(default_factory=BatchPolling)

    def __post_init__(self) -> None:
        if not 1 <= self.max_connections <= MAX_CONNECTIONS:
            raise ConfigurationError(
                f"sink: max_connections must be 1..{MAX_CONNECTIONS} "
                "(Mailchimp allows 10 simultaneous connections per key)"
            )
        if not 1 <= self.batch_size <= MAX_BATCH:
            raise ConfigurationError(f"sink: batch_size must be 1..{MAX_BATCH}")
        if self.job_size < 1:
            raise ConfigurationError("sink: job_size must be at least 1")
        if self.status_if_new not in SUBSCRIPTION_STATUSES:
            raise ConfigurationError(
                f"sink: status_if_new must be one of {sorted(SUBSCRIPTION_STATUSES)}"
            )
