"""The demo's workspace: one folder holding everything ``mailsync demo`` uses.

The demo must behave the same whatever the current directory is, and every
command it suggests afterwards must work when pasted anywhere. So it never
reads or writes the current directory: it works in one folder (by default
``$XDG_DATA_HOME/mailsync/demo``, that is ``~/.local/share/mailsync/demo``)
holding a copy of the rules, the sources and the rules tests shipped in the
package, the demo database, the state store and a ``mailsync.yaml`` naming
them. Paths in that settings file are relative to it (``sync.daemon.config`` reads
them so), the database URLs are absolute: the folder can be inspected or
copied, and the suggested commands name it by its absolute path.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

#: Files copied from the package into the workspace, in this order.
SHIPPED = ("rules.yaml", "sources.yaml", "rules.test.yaml")


def default_folder(env: Mapping[str, str] | None = None) -> Path:
    """``$XDG_DATA_HOME/mailsync/demo``, else ``~/.local/share/mailsync/demo``."""
    env = os.environ if env is None else env
    data_home = env.get("XDG_DATA_HOME") or ""
    # The XDG spec says a relative value is invalid and must be ignored.
    base = Path(data_home) if os.path.isabs(data_home) else Path.home() / ".local" / "share"
    return base / "mailsync" / "demo"


@dataclass(frozen=True)
class Workspace:
    folder: Path

    @property
    def rules(self) -> Path:
        return self.folder / "rules.yaml"

    @property
    def sources(self) -> Path:
        return self.folder / "sources.yaml"

    @property
    def rules_test(self) -> Path:
        return self.folder / "rules.test.yaml"

    @property
    def settings(self) -> Path:
        return self.folder / "mailsync.yaml"

    @property
    def database(self) -> str:
        return f"sqlite:///{self.folder / 'app.sqlite'}"

    @property
    def state(self) -> str:
        return f"sqlite:///{self.folder / 'state.sqlite'}"

    def prepare(self) -> tuple[list[str], list[str]]:
        """Create the folder and copy the shipped files that are not there yet.

        A file already in the workspace is kept: it may be the marketer's edit of
        the demo rules, which the next demo run should use rather than overwrite.
        Returns (copied, kept) file names. The state store is removed, so that
        each run tells the story from the start."""
        self.folder.mkdir(parents=True, exist_ok=True)
        shipped = resources.files("sync.demo") / "files"
        copied, kept = [], []
        for name in SHIPPED:
            target = self.folder / name
            if target.exists():
                kept.append(name)
                continue
            target.write_bytes((shipped / name).read_bytes())
            copied.append(name)
        (self.folder / "state.sqlite").unlink(missing_ok=True)
        self.settings.write_text(
            "# Written by `mailsync demo`: the demo's files, beside this one.\n"
            "# No audience is set, so `mailsync once --config` on this file is a dry run.\n"
            f"rules: rules.yaml\nsources: sources.yaml\n"
            f"database: {self.database}\nstate: {self.state}\n"
        )
        return copied, kept
