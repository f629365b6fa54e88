"""What a compiled query reads from outside: the sources' SQL and bound parameters.

Every query of ``sources.yaml`` enters the compiled statement as a named
subquery with known columns (``source_query``); the values that change from
one evaluation to the next (now, the re-initialisation instant, the ids and
keys asked for) are bound parameters with the names below, and a set of ids
filters a query through ``in_ids``.
"""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.sql.selectable import Subquery

from sync.sql.expr import Naming, SqlExpr

#: Bound parameter names the compiled query uses besides the sources' ``:now``.
NOW_US = "mailsync_now_us"
REINIT_US = "mailsync_reinit_us"
IDS = "mailsync_ids"
SKEYS = "mailsync_skeys"
CKEYS = "mailsync_ckeys"
KEYS_JSON = "mailsync_keys"
SINCE = "mailsync_since"
#: With settled rows left out (``CompiledEntity.with_fingerprint``): the
#: instant as stored instants compare to it, and the ids a full pass must see
#: even when settled.
NOW_AT = "mailsync_now_at"
UNSETTLED = "mailsync_unsettled"


def in_ids(column: SqlExpr, naming: Naming, id_type: str) -> SqlExpr:
    """``column`` is one of the requested ids: ``= ANY(:ids)`` with one array
    parameter on PostgreSQL (any number of ids in one query), an expanding
    ``IN`` on SQLite (which has no arrays; the evaluator sends chunks)."""
    if naming.dialect == "postgresql":
        element = sa.BigInteger() if id_type == "integer" else sa.Text()
        return column == sa.any_(sa.bindparam(IDS, type_=postgresql.ARRAY(element)))
    return column.in_(sa.bindparam(IDS, expanding=True))


def entity_id(column: SqlExpr, dialect: str, id_type: str) -> SqlExpr:
    """A source row's id as the entity it names, or NULL when it names none.

    SQLite keeps each value's own storage type: an integer entity's rows may
    carry ``2`` in one table and the text ``'2'`` in another, which
    ``GROUP BY`` keeps apart (one entity came out twice) while a join with
    the list matches both, and ``'02'`` would match entity 2 too. The reader
    takes ``'2'`` as 2 and refuses ``'02'`` (``sources.streams.entity_key``);
    so does this: text written as the integer it is becomes that integer,
    anything else NULL (left out, and reported by the full pass's check).
    PostgreSQL types a column once: nothing to do.

    The whole is cast to INTEGER once more: a ``CASE`` has no affinity, and
    SQLite then compares it with the list's integer ids by converting it,
    which rules out the automatic index its joins rely on: every entity
    was compared with every action aggregate (10k users 7 s, 100k users
    625 s, ``benchmarks/README.md``).
    """
    if dialect != "sqlite" or id_type != "integer":
        return column
    as_integer = sa.cast(column, sa.Integer)
    known = sa.case(
        (sa.func.typeof(column) == "integer", column),
        (
            sa.and_(sa.func.typeof(column) == "text", sa.cast(as_integer, sa.Text) == column),
            as_integer,
        ),
        (sa.and_(sa.func.typeof(column) == "real", as_integer == column), as_integer),
        else_=sa.null(),
    )
    return sa.cast(known, sa.Integer)


def source_query(query_sql: str, columns: Iterable[str], name: str) -> Subquery:
    """A query of sources.yaml as a subquery ``name`` with these columns."""
    return sa.text(query_sql).columns(*(sa.column(c) for c in columns)).subquery(name)
