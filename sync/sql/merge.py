"""Merge fields as result columns: where each merge tag's value comes from.

A merge field's source is the status, the action code, a fact of the
population (its ``f_<name>`` column) or a derived fact, computed in SQL as a
``d_<name>`` column (``derived_columns``). ``merge_columns`` records, per
tag, how the value decodes and which result column holds it; the compiled
entity decodes them (``CompiledEntity.decode``).
"""

from __future__ import annotations

from collections.abc import Mapping

from sync.rules.model import ACTION_CODE, STATUS, Entity
from sync.sql.expr import ExprCompiler, SqlExpr

#: Per merge field: (tag, how to decode, result column; None for the status,
#: the action code or a source that does not exist).
MergeColumns = tuple[tuple[str, str, str | None], ...]


def merge_columns(entity: Entity, facts: Mapping[str, tuple[str, str]]) -> MergeColumns:
    """The merge fields of ``entity``, given the population's fact columns
    (fact name → (how it decodes, result column))."""
    merge: list[tuple[str, str, str | None]] = []
    for merge_field in entity.merge_fields:
        src = merge_field.source
        if src in (STATUS, ACTION_CODE):
            merge.append((merge_field.tag, src, None))
        elif src in facts:
            how, column = facts[src]
            merge.append((merge_field.tag, how, column))
        elif any(d.name == src for d in entity.derived):
            kind = next(d.type for d in entity.derived if d.name == src)
            merge.append((merge_field.tag, f"derived:{kind.value if kind else ''}", f"d_{src}"))
        else:
            merge.append((merge_field.tag, "missing", None))
    return tuple(merge)


def derived_columns(entity: Entity, compiler: ExprCompiler) -> list[SqlExpr]:
    """The derived facts merge fields read, as ``d_<name>`` columns."""
    wanted = {m.source for m in entity.merge_fields}
    return [compiler.value(d.name).label(f"d_{d.name}") for d in entity.derived if d.name in wanted]
