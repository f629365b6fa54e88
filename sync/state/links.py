"""Links between entities: which entities' facts depend on which others
(migration 0002), so that re-evaluating one entity re-evaluates those that
count it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import sqlalchemy as sa

from sync.state.base import StoreBase, chunks
from sync.state.tables import entity_link


class LinkStore(StoreBase):
    """The ``entity_link`` table: replaced per dependent, read per dependency."""

    def replace_links(
        self, dependent_type: str, links: Mapping[str, Iterable[tuple[str, str]]]
    ) -> None:
        """For each dependent id, replace its (dependency type, id) links."""
        ids = list(links)
        rows = [
            {
                "dependent_type": dependent_type,
                "dependent_id": dependent_id,
                "dependency_type": dep_type,
                "dependency_id": dep_id,
            }
            for dependent_id, pairs in links.items()
            for dep_type, dep_id in pairs
        ]
        with self.engine.begin() as conn:
            for chunk in chunks(ids):
                conn.execute(
                    entity_link.delete().where(
                        entity_link.c.dependent_type == dependent_type,
                        self._among(entity_link.c.dependent_id, chunk),
                    )
                )
            self._upsert(
                conn,
                entity_link,
                rows,
                ("dependent_type", "dependent_id", "dependency_type", "dependency_id"),
            )

    def dependents(
        self, dependent_type: str, dependency_type: str, dependency_ids: Iterable[str]
    ) -> set[str]:
        """Ids of ``dependent_type`` entities linked to any of these dependencies."""
        found: set[str] = set()
        with self.engine.connect() as conn:
            for chunk in chunks(list(dict.fromkeys(dependency_ids))):
                rows = conn.execute(
                    sa.select(entity_link.c.dependent_id).where(
                        entity_link.c.dependent_type == dependent_type,
                        entity_link.c.dependency_type == dependency_type,
                        self._among(entity_link.c.dependency_id, chunk),
                    )
                )
                found.update(row[0] for row in rows)
        return found
