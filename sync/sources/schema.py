"""From ``sources.yaml`` to a ``SourcesConfig``, or to every reason it is wrong.

``load_sources(path)`` reads the file with ``sync.rules.loader`` (lines kept)
and walks it building the typed model of ``sync.sources.model``, collecting
every problem (file, line, path, what was expected, what was found) before
failing, with the shared checks of ``sync.rules.validate``. Each query is
checked without a database: one statement, and only the bound parameters its
kind of query may use (``mailsync check`` runs them: ``sync.sources.check``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa

from sync.exceptions import RulesError
from sync.records import FactValue
from sync.rules.loader import Document, MarkedDict, line_of, load_yaml, read_yaml_file
from sync.rules.validate import Path_, Report, missing_key
from sync.sources.model import (
    FACT_TYPES,
    ID_TYPES,
    PARAMS_CHANGED,
    PARAMS_READ,
    Column,
    EntitySource,
    FactQuery,
    FactType,
    Query,
    RelationSource,
    SourcesConfig,
)
from sync.sources.rollups import Rollup

_TOP_KEYS = ("naive_timezone", "entities")
_ENTITY_KEYS = (
    "id_type",
    "naive_timezone",
    "list",
    "actions",
    "facts",
    "relations",
    "rollups",
    "watermark",
    "changed",
)
_FACT_QUERY_KEYS = ("sql", "columns")
_COLUMN_KEYS = ("type", "default")
_ROLLUP_KEYS = ("relation", "status", "where")


def load_sources(path: str | Path) -> SourcesConfig:
    """Read and validate a sources file; raises ``RulesError`` listing every problem."""
    return _build(read_yaml_file(path))


def parse_sources(text: str, file: str = "sources.yaml") -> SourcesConfig:
    """Validate sources given as text (``file`` names it in messages)."""
    return _build(load_yaml(text, file))


def _build(doc: Document) -> SourcesConfig:
    builder = _Builder(doc.file)
    builder.problems.extend(doc.problems)
    entities: dict[str, EntitySource] = {}
    top = builder.mapping(doc.data, None, None, (), _TOP_KEYS) if doc.data is not None else None
    if doc.data is None:
        builder.error(None, None, (), "the file is empty; expected a mapping with 'entities'")
    if top is not None:
        tz = "UTC"
        if "naive_timezone" in top:
            tz = (
                builder.timezone(top["naive_timezone"], top, "naive_timezone", ("naive_timezone",))
                or "UTC"
            )
        if top.get("entities") is None:
            builder.error(top, None, (), missing_key("entities"))
        else:
            emap = builder.mapping(top["entities"], top, "entities", ("entities",))
            if emap is not None and not emap:
                builder.error(top, "entities", ("entities",), "expected at least one entity type")
            for name, raw in (emap or {}).items():
                path = ("entities", name)
                if not builder.snake_name(emap, name, path, "an entity type"):
                    continue
                entity = builder.entity(name, raw, emap, path, tz)
                if entity is not None:
                    entities[name] = entity
    if builder.failed:
        # Reading order: a person fixes a file top to bottom.
        raise RulesError(sorted(builder.problems, key=lambda p: p.line or 0))
    return SourcesConfig(doc.file, entities)


class _Values(Report):
    """The checks of one value of a sources file: mappings, SQL, time zones, columns.

    Its messages are for engineers: ``expected a mapping, got a list``.
    """

    found = "got"

    def describe(self, value: object) -> str:
        if value is None:
            return "nothing"
        if isinstance(value, dict):
            return "a mapping"
        if isinstance(value, list):
            return "a list"
        if isinstance(value, bool):
            return f"boolean {str(value).lower()}"
        if isinstance(value, int | float):
            return f"number {value}"
        return repr(value)

    def mapping(
        self, value: Any, parent: Any, key: Any, path: Path_, allowed: Sequence[str] | None = None
    ) -> MarkedDict | None:
        """``value`` if it is a mapping, with its keys checked against ``allowed``
        (any key when None: the keys are names)."""
        if not isinstance(value, dict):
            self.expected(parent, key, path, "a mapping", value)
            return None
        if allowed is not None:
            self.unknown_keys(value, allowed, path)
        return value if isinstance(value, MarkedDict) else MarkedDict(value)

    def query(
        self, value: Any, parent: Any, key: Any, path: Path_, allowed_params: frozenset[str]
    ) -> Query | None:
        line = line_of(parent, key)
        if not isinstance(value, str) or not value.strip():
            self.expected(parent, key, path, "SQL text", value)
            return None
        sql = value.strip()
        # A trailing `;` is natural to write but breaks the reader's wrapping
        # (`SELECT * FROM (...) AS q`), so tolerate exactly that one.
        sql = sql[:-1].rstrip() if sql.endswith(";") else sql
        if ";" in _strip_literals(sql):
            self.error(parent, key, path, "expected one SQL statement, found ';' inside")
            return None
        try:
            params = frozenset(sa.text(sql).compile().params)
        except sa.exc.ArgumentError as exc:  # pragma: no cover - text() accepts almost anything
            self.error(parent, key, path, f"cannot parse SQL: {exc}")
            return None
        unknown = sorted(params - allowed_params)
        if unknown:
            allowed = ", ".join(f":{p}" for p in sorted(allowed_params))
            self.error(
                parent,
                key,
                path,
                f"unknown bound parameter {', '.join(':' + u for u in unknown)}"
                f" (allowed here: {allowed})",
            )
            return None
        return Query(sql, self.file, line, path, params)

    def timezone(self, value: Any, parent: Any, key: Any, path: Path_) -> str | None:
        if not isinstance(value, str):
            self.expected(parent, key, path, "a time zone name like UTC or Europe/Paris", value)
            return None
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            self.error(parent, key, path, f"unknown time zone {value!r}")
            return None
        return value

    def columns(
        self, value: Any, parent: Any, key: Any, path: Path_, reserved: Sequence[str]
    ) -> tuple[Column, ...]:
        spec = self.mapping(value, parent, key, path)
        if spec is None:
            return ()
        if not spec:
            self.error(parent, key, path, "expected at least one column")
        result: list[Column] = []
        for name, raw in spec.items():
            cpath = (*path, name)
            if not self.snake_name(spec, name, cpath, "a name"):
                continue
            if name in reserved:
                self.error(spec, name, cpath, f"{name!r} is reserved for the entity id")
                continue
            default: Any = None
            if isinstance(raw, dict):
                body = self.mapping(raw, spec, name, cpath, _COLUMN_KEYS)
                if body is None:
                    continue
                type_ = body.get("type")
                default = body.get("default")
                tparent, tkey = body, "type"
            else:
                type_, tparent, tkey = raw, spec, name
            if type_ not in FACT_TYPES:
                self.expected(tparent, tkey, cpath, f"a type ({', '.join(FACT_TYPES)})", type_)
                continue
            if default is not None and not _fits(default, type_):
                self.error(
                    raw,
                    "default",
                    (*cpath, "default"),
                    f"default must be a {type_}, got {self.describe(default)}",
                )
                continue
            result.append(Column(name, type_, default))
        return tuple(result)


class _Builder(_Values):
    """Walks one sources file, one section of an entity type at a time."""

    def entity(
        self, name: str, raw: Any, parent: Any, path: Path_, default_tz: str
    ) -> EntitySource | None:
        body = self.mapping(raw, parent, name, path, _ENTITY_KEYS)
        if body is None:
            return None
        ok = True
        id_type = body.get("id_type", "integer")
        if id_type not in ID_TYPES:
            self.expected(
                body, "id_type", (*path, "id_type"), f"one of {', '.join(ID_TYPES)}", id_type
            )
            ok = False
        tz = default_tz
        if "naive_timezone" in body:
            tz = (
                self.timezone(
                    body["naive_timezone"], body, "naive_timezone", (*path, "naive_timezone")
                )
                or default_tz
            )
        list_query = None
        hint = ": the query returning id, email and identity columns"
        if self.required(body, "list", parent, name, path, hint):
            list_query = self.query(body["list"], body, "list", (*path, "list"), PARAMS_READ)
        actions = self.actions(body, path)
        seen: dict[str, Path_] = {}  # fact names, where first given
        facts = self.facts(body, path, seen)
        relations = self.relations(body, path)
        rollups = self.rollups(body, path, relations, seen)
        watermark = changed = None
        if "watermark" in body:
            watermark = self.query(
                body["watermark"], body, "watermark", (*path, "watermark"), PARAMS_READ
            )
        if "changed" in body:
            changed = self.query(
                body["changed"], body, "changed", (*path, "changed"), PARAMS_CHANGED
            )
        if not ok or list_query is None:
            return None
        return EntitySource(
            name,
            id_type,
            tz,
            list_query,
            actions,
            facts,
            relations,
            rollups,
            watermark,
            changed,
        )

    def actions(self, body: MarkedDict, path: Path_) -> tuple[tuple[str, Query], ...]:
        """``actions:``: one query per action, its occurrences."""
        actions: list[tuple[str, Query]] = []
        raw_actions = body.get("actions")
        if raw_actions is None:
            return ()
        amap = self.mapping(raw_actions, body, "actions", (*path, "actions"))
        for action, sql in (amap or {}).items():
            apath = (*path, "actions", action)
            if not self.snake_name(amap, action, apath, "an action name"):
                continue
            q = self.query(sql, amap, action, apath, PARAMS_READ)
            if q is not None:
                actions.append((action, q))
        return tuple(actions)

    def facts(self, body: MarkedDict, path: Path_, seen: dict[str, Path_]) -> tuple[FactQuery, ...]:
        """``facts:``: a list of queries, each giving typed columns."""
        raw_facts = body.get("facts")
        if raw_facts is None:
            return ()
        if not isinstance(raw_facts, list):
            self.expected(body, "facts", (*path, "facts"), "a list of {sql, columns}", raw_facts)
            return ()
        facts: list[FactQuery] = []
        for index, item in enumerate(raw_facts):
            fpath = (*path, "facts", index)
            fbody = self.mapping(item, raw_facts, index, fpath, _FACT_QUERY_KEYS)
            if fbody is None:
                continue
            q = self._required_query(fbody, raw_facts, index, fpath)
            cols = self._required_columns(fbody, raw_facts, index, fpath)
            for col in cols:
                self._unique(seen, col.name, fbody, fpath)
            if q is not None:
                facts.append(FactQuery(q, cols))
        return tuple(facts)

    def relations(self, body: MarkedDict, path: Path_) -> tuple[RelationSource, ...]:
        """``relations:``: per related entity type, the rows that link to it."""
        raw_rel = body.get("relations")
        if raw_rel is None:
            return ()
        relations: list[RelationSource] = []
        rmap = self.mapping(raw_rel, body, "relations", (*path, "relations"))
        for rel, rraw in (rmap or {}).items():
            rpath = (*path, "relations", rel)
            if not self.snake_name(rmap, rel, rpath, "the related entity type"):
                continue
            rbody = self.mapping(rraw, rmap, rel, rpath, _FACT_QUERY_KEYS)
            if rbody is None:
                continue
            q = self._required_query(rbody, rmap, rel, rpath)
            cols = self._required_columns(rbody, rmap, rel, rpath, ("id", "related_id"))
            if q is not None:
                relations.append(RelationSource(rel, q, cols))
        return tuple(relations)

    def rollups(
        self,
        body: MarkedDict,
        path: Path_,
        relations: Sequence[RelationSource],
        seen: dict[str, Path_],
    ) -> tuple[Rollup, ...]:
        """``rollups:``: facts computed from related entities' statuses."""
        raw_roll = body.get("rollups")
        if raw_roll is None:
            return ()
        rollups: list[Rollup] = []
        rmap = self.mapping(raw_roll, body, "rollups", (*path, "rollups"))
        by_name = {r.name: r for r in relations}
        for fact, rraw in (rmap or {}).items():
            rpath = (*path, "rollups", fact)
            rollup = self._rollup(fact, rraw, rmap, rpath, by_name, body.get("relations"))
            if rollup is not None:
                self._unique(seen, fact, rmap, rpath)
                rollups.append(rollup)
        return tuple(rollups)

    def _required_query(self, body: MarkedDict, parent: Any, key: Any, path: Path_) -> Query | None:
        if not self.required(body, "sql", parent, key, path):
            return None
        return self.query(body["sql"], body, "sql", (*path, "sql"), PARAMS_READ)

    def _required_columns(
        self,
        body: MarkedDict,
        parent: Any,
        key: Any,
        path: Path_,
        reserved: Sequence[str] = ("id",),
    ) -> tuple[Column, ...]:
        hint = f" (name: type, the type one of {', '.join(FACT_TYPES)})"
        if not self.required(body, "columns", parent, key, path, hint):
            return ()
        return self.columns(body["columns"], body, "columns", (*path, "columns"), reserved)

    def _unique(self, seen: dict[str, Path_], name: str, container: Any, path: Path_) -> None:
        if name in seen:
            first = " ==> ".join(str(p) for p in seen[name])
            self.error(container, None, path, f"fact {name!r} is already given by {first}")
        else:
            seen[name] = path

    def _rollup(
        self,
        fact: Any,
        raw: Any,
        parent: Any,
        path: Path_,
        relations: Mapping[str, RelationSource],
        raw_rel: Any,
    ) -> Rollup | None:
        if not self.snake_name(parent, fact, path, "a fact name"):
            return None
        body = self.mapping(raw, parent, fact, path, _ROLLUP_KEYS)
        if body is None:
            return None
        relation = body.get("relation")
        if relation is None:
            self.error(parent, fact, path, missing_key("relation"))
            return None
        if relation not in relations:
            if not (isinstance(raw_rel, dict) and relation in raw_rel):  # else already reported
                known = ", ".join(sorted(relations)) or "none declared"
                self.error(
                    body,
                    "relation",
                    (*path, "relation"),
                    f"unknown relation {relation!r} (known: {known})",
                )
            return None
        statuses: list[str] = []
        raw_status = body.get("status")
        if raw_status is not None:
            items = raw_status if isinstance(raw_status, list) else [raw_status]
            for item in items:
                if not isinstance(item, str) or not item:
                    self.expected(
                        body,
                        "status",
                        (*path, "status"),
                        "a status or pattern like 'ongoing.*'",
                        item,
                    )
                else:
                    statuses.append(item)
        where: list[tuple[str, tuple[FactValue, ...]]] = []
        raw_where = body.get("where")
        columns = {c.name: c for c in relations[relation].columns}
        if raw_where is not None:
            wmap = self.mapping(raw_where, body, "where", (*path, "where"))
            for column, value in (wmap or {}).items():
                wpath = (*path, "where", column)
                if column not in columns:
                    self.error(
                        wmap,
                        column,
                        wpath,
                        f"relation {relation!r} has no column {column!r}"
                        f" (columns: {', '.join(columns) or 'none'})",
                    )
                    continue
                values = tuple(value) if isinstance(value, list) else (value,)
                type_ = columns[column].type
                bad = [v for v in values if v is None or not _fits(v, type_)]
                if bad or not values:
                    self.expected(wmap, column, wpath, f"{type_} value(s)", value)
                    continue
                where.append((column, values))
        return Rollup(fact, relation, tuple(statuses), tuple(where))


def _fits(value: Any, type_: FactType) -> bool:
    if type_ == "bool":
        return isinstance(value, bool)
    if type_ == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    # Instants have no literal form in this file: they come from the database.
    return type_ == "string" and isinstance(value, str)


_LITERAL = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|--[^\n]*")


def _strip_literals(sql: str) -> str:
    """SQL with string literals, quoted names and line comments removed."""
    return _LITERAL.sub("", sql)
