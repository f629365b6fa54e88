"""What was odd in one read: orphan rows, duplicates, unusable values.

The reader never attaches a row to the wrong entity nor stops on one bad
value: it counts each anomaly per query in a ``ReadReport``, keeps a few
examples, and logs them as warnings when the read ends.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

log = logging.getLogger("sync.sources.model")

#: How many examples of each reported anomaly to keep.
_EXAMPLES = 5


@dataclass
class ReadReport:
    """What was odd in one read; logged as warnings when the read ends."""

    entity_type: str
    entities: int = 0
    orphans: dict[str, int] = field(default_factory=dict)
    duplicates: dict[str, int] = field(default_factory=dict)
    bad_values: dict[str, int] = field(default_factory=dict)
    bad_ids: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)

    def note(self, counter: dict[str, int], label: str, example: str) -> None:
        counter[label] = counter.get(label, 0) + 1
        if len(self.examples) < _EXAMPLES * 4:
            self.examples.append(example)

    @property
    def clean(self) -> bool:
        return not (self.orphans or self.duplicates or self.bad_values or self.bad_ids)

    def log(self) -> None:
        for title, counter in (
            ("rows for ids not in the entity list", self.orphans),
            ("duplicate rows (first kept)", self.duplicates),
            ("unusable values (read as null / row skipped)", self.bad_values),
            ("rows with an unusable id (skipped)", self.bad_ids),
        ):
            for label, count in counter.items():
                log.warning("%s: %d %s in %s", self.entity_type, count, title, label)
        for example in self.examples:
            log.warning("  e.g. %s", example)
