"""Rules reloads: ``rules.yaml`` changed while the daemon runs.

``RulesWatcher`` installs new rules once they are valid (and agree with the
sources); invalid ones are logged and the last good rules stay in force.
``rules_changes`` says in the log what a reload changes.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sync.daemon.runtime import Runtime, contract_problems
from sync.exceptions import RulesError
from sync.rules.model import Ruleset
from sync.rules.schema import load_rules

#: The daemon's log lines keep the name they always had (operators filter on it).
log = logging.getLogger("sync.daemon.runtime")


def rules_changes(old: Ruleset, new: Ruleset) -> list[str]:
    """What a rules reload changes, for the log: statuses added or removed."""
    changes: list[str] = []
    for name in sorted(set(old.entities) | set(new.entities)):
        before = set(old.entities[name].status_names) if name in old.entities else set()
        after = set(new.entities[name].status_names) if name in new.entities else set()
        if name not in old.entities:
            changes.append(f"entity {name} added")
        elif name not in new.entities:
            changes.append(f"entity {name} removed")
        if after - before:
            changes.append(f"{name}: statuses added: {', '.join(sorted(after - before))}")
        if before - after:
            changes.append(f"{name}: statuses removed: {', '.join(sorted(before - after))}")
    return changes or ["no status added or removed"]


class RulesWatcher:
    """Reloads ``rules.yaml`` when it changes; keeps the last good rules when
    the new ones are invalid."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.path = runtime.config.rules
        self.mtime = self._mtime()

    def _mtime(self) -> float | None:
        try:
            return self.path.stat().st_mtime
        except OSError:
            return None

    def check(self, now: datetime) -> bool:
        """True when new rules were installed."""
        mtime = self._mtime()
        if mtime == self.mtime:
            return False
        self.mtime = mtime
        try:
            new = load_rules(self.path)
            problems = contract_problems(new, self.runtime.sources, self.runtime.reader, now)
            if problems:
                raise RulesError(problems)
        except RulesError as exc:
            log.error(
                "rules reload: %s is invalid, still running on the previous rules:\n%s",
                self.path,
                "\n".join(str(p) for p in exc.problems),
            )
            return False
        log.info(
            "rules reload: %s changed and is valid; a full pass re-derives everyone now: %s",
            self.path,
            "; ".join(rules_changes(self.runtime.ruleset, new)),
        )
        self.runtime.ruleset = new
        return True
