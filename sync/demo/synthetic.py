"""Helpers shared by the demo data generators: seeded randomness, names, instants.

Generators are deterministic: the same (example, seed, now, size) gives the
same rows, byte for byte. Each chunk of users draws from its own
``random.Random`` seeded from (seed, example, stream, chunk index), so a chunk
does not depend on how much randomness an earlier one consumed, and
changing one distribution does not reshuffle everything else.

Instants are whole seconds since the epoch (cheap integer arithmetic while
generating) and leave as text in SQLAlchemy's SQLite storage format,
``YYYY-MM-DD HH:MM:SS.ffffff``, naive and in UTC: SQLite stores exactly that,
and PostgreSQL reads it as a UTC ``timestamptz`` because the loading session
runs with ``TimeZone=UTC``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

MINUTE = 60
HOUR = 3600
DAY = 86400

#: Users generated (and held in memory) at a time.
CHUNK_USERS = 10_000

_EPOCH = datetime(1970, 1, 1)

FIRST_NAMES = (
    "Camille",
    "Léa",
    "Manon",
    "Chloé",
    "Inès",
    "Sarah",
    "Emma",
    "Louise",
    "Jade",
    "Alice",
    "Lucas",
    "Hugo",
    "Louis",
    "Nathan",
    "Gabriel",
    "Jules",
    "Arthur",
    "Adam",
    "Raphaël",
    "Paul",
    "Mohamed",
    "Yasmine",
    "Anna",
    "Lena",
    "Jonas",
    "Felix",
    "Mia",
    "Noah",
    "Omar",
    "Fatima",
    "Ahmad",
    "Sofia",
    "Maria",
    "Elias",
    "Leon",
    "Amira",
    "Karim",
    "Nour",
    "Zoé",
)
LAST_NAMES = (
    "Martin",
    "Bernard",
    "Dubois",
    "Thomas",
    "Robert",
    "Richard",
    "Petit",
    "Durand",
    "Leroy",
    "Moreau",
    "Simon",
    "Laurent",
    "Lefebvre",
    "Michel",
    "Garcia",
    "David",
    "Müller",
    "Schmidt",
    "Schneider",
    "Fischer",
    "Weber",
    "Meyer",
    "Wagner",
    "Becker",
    "Hoffmann",
    "Schulz",
    "Haddad",
    "Nguyen",
    "Rossi",
    "Kowalski",
    "Yilmaz",
    "Silva",
)
DOMAINS = ("example.org", "example.com", "mail.example.net", "univ.example.edu")


@dataclass(frozen=True)
class Batch:
    """Rows for one table, in the table's column order."""

    table: sa.Table
    rows: Sequence[tuple[Any, ...]]


class Ids:
    """Primary keys handed out in generation order (deterministic, no sequences)."""

    def __init__(self) -> None:
        self.last: dict[str, int] = {}

    def __call__(self, table: sa.Table) -> int:
        value = self.last.get(table.name, 0) + 1
        self.last[table.name] = value
        return value


def chunk_rng(seed: int, example: str, stream: str, chunk: int) -> random.Random:
    """The random source of one chunk of one stream; str seeds hash stably (SHA-512)."""
    return random.Random(f"{example}/{stream}/{seed}/{chunk}")


def instant(ts: int) -> str:
    """Seconds since the epoch as naive-UTC text in SQLAlchemy's storage format."""
    return (_EPOCH + timedelta(seconds=ts)).isoformat(" ", timespec="microseconds")


def epoch(value: datetime) -> int:
    """An aware datetime as whole seconds since the epoch."""
    return int(value.timestamp())


def person(rng: random.Random, user_id: int) -> tuple[str, str, str, str]:
    """(email, first name, last name, username); about one email in ten has capitals.

    Mixed-case emails are deliberate: Mailchimp identifies members by the
    lower-cased address, and the demo should exercise that.
    """
    first = rng.choice(FIRST_NAMES)
    last = rng.choice(LAST_NAMES)
    username = f"{_ascii(first).lower()}{_ascii(last).lower()[:3]}{user_id}"
    email = f"{_ascii(first).lower()}.{_ascii(last).lower()}.{user_id}@{rng.choice(DOMAINS)}"
    if rng.random() < 0.1:
        email = f"{_ascii(first)}.{_ascii(last)}.{user_id}@{rng.choice(DOMAINS)}"
    return email, first, last, username


_FOLD = str.maketrans("éèëêàâäïîôöüûçÉ", "eeeeaaaiioouucE")


def _ascii(name: str) -> str:
    return name.translate(_FOLD)


def signup_time(rng: random.Random, now: int, horizon_days: int = 540) -> int:
    """A signup instant before ``now``: many recent, a long tail of old ones.

    A fifth land in the last two weeks so that the first rungs of the time
    ladders (24h, 7d) are in motion when the demo runs.
    """
    if rng.random() < 0.2:
        return now - rng.randrange(1, 14 * DAY)
    return now - int(rng.random() ** 1.6 * horizon_days * DAY) - rng.randrange(1, DAY)


def later(rng: random.Random, start: int, typical: int, now: int) -> int | None:
    """An instant after ``start`` (exponential delay around ``typical`` seconds),
    or None when it would fall after ``now``: that step has not happened yet."""
    at = start + max(60, int(rng.expovariate(1 / typical)))
    return at if at <= now else None
