"""What one push did: ``PushSummary``, counted and worded for the log and the CLI."""

from __future__ import annotations

from dataclasses import dataclass, field

from sync.mailchimp.ledger import PushFailure


@dataclass
class PushSummary:
    dry_run: bool = False
    considered: int = 0
    pushed: int = 0  # members with every planned change accepted
    unchanged: int = 0
    held_back: int = 0  # failed before with the same desired state; back-off running
    #: Members not pushed because they are archived in Mailchimp (known
    #: beforehand, or from the answer to a PUT).
    archived: int = 0
    failed: int = 0
    events_sent: int = 0
    #: Events whose earlier POST had no known outcome, found in Mailchimp (so
    #: recorded sent without a new POST) or not found (so sent again).
    events_confirmed: int = 0
    events_resent: int = 0
    #: Events POSTed in this push whose outcome is unknown: left pending.
    events_unconfirmed: int = 0
    #: Events a dry run would send (``events_sent`` stays 0: nothing was sent).
    events_planned: int = 0
    calls: dict[str, int] = field(default_factory=dict)  # API calls by answer class
    failures: list[PushFailure] = field(default_factory=list)
    #: Merge tags the audience does not have → values not sent (the tag was
    #: known missing) or dropped by Mailchimp (the answer lacked it).
    missing_merge_tags: dict[str, int] = field(default_factory=dict)
    #: Merge values not sent because they are not JSON (NaN, ±Infinity).
    invalid_values: int = 0
    #: Members (lower-cased) with values of a missing tag not kept: their
    #: contribution is not accepted whole, so the cycle must push it again.
    not_kept: list[str] = field(default_factory=list)
    #: Members (lower-cased) with operations in a ``/batches`` job left
    #: running: a later push collects the answers (``sync.mailchimp.collect``).
    running_members: list[str] = field(default_factory=list)
    #: Members not pushed because a job left running still has their operations.
    held_running: int = 0
    #: Operations of jobs left running by earlier pushes whose answers this
    #: push collected.
    collected: int = 0

    def lines(self) -> list[str]:
        if self.dry_run:
            return [
                f"DRY RUN, nothing sent: {self.considered} members considered, would push "
                f"{self.pushed}, {self.unchanged} unchanged, {self.held_back} held back; "
                f"would send {self.events_planned} events"
            ]
        head = ""
        out = [
            f"{head}{self.considered} members considered, {self.pushed} pushed, "
            f"{self.unchanged} unchanged, {self.held_back} held back, {self.failed} failed, "
            f"{self.events_sent} events sent",
        ]
        if self.archived:
            out.append(f"{self.archived} members archived in Mailchimp: not pushed")
        if self.running_members or self.held_running or self.collected:
            out.append(
                f"/batches jobs left running: {len(set(self.running_members))} members wait "
                f"for this push's jobs, {self.held_running} for earlier ones; "
                f"{self.collected} operations of earlier jobs collected"
            )
        if self.events_confirmed or self.events_resent or self.events_unconfirmed:
            out.append(
                f"events of unknown outcome: {self.events_confirmed} found in Mailchimp, "
                f"{self.events_resent} sent again, {self.events_unconfirmed} left to check"
            )
        if self.missing_merge_tags:
            out.append(
                "merge tags missing from the audience (values not kept): "
                + ", ".join(f"{t} {n}" for t, n in sorted(self.missing_merge_tags.items()))
            )
        if self.invalid_values:
            out.append(f"merge values not sent (not JSON): {self.invalid_values}")
        if self.calls:
            out.append("API calls: " + ", ".join(f"{k} {v}" for k, v in sorted(self.calls.items())))
        out.extend(
            f"  {f.email}: {'permanent' if f.permanent else 'transient'}: {f.reason}"
            for f in self.failures
        )
        return out
