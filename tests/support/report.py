"""The figures a long run prints: its report as JSON, counters sorted."""

from __future__ import annotations

from collections import Counter
from typing import Any


class JsonReport:
    """Mixed into a run's report dataclass: ``as_json`` for ``print``."""

    def as_json(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        for key, value in out.items():
            if isinstance(value, Counter):
                out[key] = dict(sorted(value.items()))
        return out
