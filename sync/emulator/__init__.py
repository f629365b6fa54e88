"""A faithful local Mailchimp Marketing API v3, for tests and demos.

Mailchimp cannot be reached from development machines or CI, so mailsync
ships an emulator of the parts of the API it uses, over real HTTP, with the
official client pointed at it. The public surface is re-exported here:

* :class:`Emulator`: the server plus its state; ``with Emulator() as e: ...``;
* :func:`client_for`: an official client aimed at any base URL;
* :class:`FaultKind`: the failures one can inject (``e.faults.script(...)``);
* :class:`BatchQueue` / :class:`Batch`: the ``/batches`` jobs (``e.batches``);

``sync.emulator.fixtures`` is the pytest plugin (``mailchimp_emulator``).
See ``docs/emulator.md``.
"""

from sync.emulator.audience import Audience
from sync.emulator.batches import Batch, BatchQueue
from sync.emulator.calls import Call, CallLog, OperationCall
from sync.emulator.client import client_for
from sync.emulator.faults import FaultKind, FaultPlan
from sync.emulator.members import Event, Member
from sync.emulator.server import DEFAULT_API_KEY, DEFAULT_LIST_ID, Emulator
from sync.emulator.store import Store

__all__ = [
    "DEFAULT_API_KEY",
    "DEFAULT_LIST_ID",
    "Audience",
    "Batch",
    "BatchQueue",
    "Call",
    "CallLog",
    "Emulator",
    "Event",
    "FaultKind",
    "FaultPlan",
    "Member",
    "OperationCall",
    "Store",
    "client_for",
]
