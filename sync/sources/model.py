"""The sources configuration: how mailsync reads the application's database.

``rules.yaml`` belongs to marketers and never contains SQL. ``sources.yaml``
belongs to the application's engineers: per entity type it says how to list
the entities, which query gives the occurrences of each action, which
queries give the facts, and (for facts that depend on other entities'
derived statuses) which relation rows to read and how to roll them up.

This module turns that file into a typed, behaviour-free ``SourcesConfig``,
collecting every problem (file, line, path, what was expected, what was
found) before failing. Reading the database is ``source_reader.py``'s job;
rolling relations up is ``rollups.py``'s.

Every query is plain SQL run through SQLAlchemy ``text()``; the only values
that ever reach it are bound parameters (``:now``, ``:since``) and the
entity-id filter that the reader wraps around it, never string formatting.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa

from sync.exceptions import Problem, RulesError
from sync.records import FactValue
from sync.rules.loader import Document, MarkedDict, line_of, load_yaml, read_yaml_file
from sync.sources.rollups import Rollup

FactType = Literal["bool", "number", "string", "instant"]
IdType = Literal["integer", "text"]

FACT_TYPES: tuple[FactType, ...] = ("bool", "number", "string", "instant")
ID_TYPES: tuple[IdType, ...] = ("integer", "text")

#: Bound parameters each kind of query may use. ``ids`` is never written by
#: hand: the reader wraps queries in its own ``WHERE id IN (...)``.
PARAMS_READ = frozenset({"now"})
PARAMS_CHANGED = frozenset({"now", "since"})

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
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

Path_ = tuple[str | int, ...]


@dataclass(frozen=True)
class Query:
    """One SQL text from the file, with where it was written (for messages)."""

    sql: str
    file: str
    line: int | None
    path: Path_
    params: frozenset[str]

    @property
    def label(self) -> str:
        """``sources.yaml:12 (entities ==> user ==> actions ==> signup)``."""
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where} ({' ==> '.join(str(p) for p in self.path)})"


@dataclass(frozen=True)
class Column:
    """A typed column of a facts or relations query.

    ``default`` is the value an entity gets when the query has no row for it
    (``has_wallet: {type: bool, default: false}`` lets the query return only
    the users that do have one).
    """

    name: str
    type: FactType
    default: FactValue = None


@dataclass(frozen=True)
class FactQuery:
    """A query returning ``id`` plus one column per fact."""

    query: Query
    columns: tuple[Column, ...]


@dataclass(frozen=True)
class RelationSource:
    """A query returning ``id``, ``related_id`` and per-relation columns.

    ``name`` is the related entity type (``match``): its evaluated statuses
    are what the rollups look up.
    """

    name: str
    query: Query
    columns: tuple[Column, ...]


@dataclass(frozen=True)
class EntitySource:
    """Everything needed to read one entity type."""

    entity_type: str
    id_type: IdType
    naive_timezone: str
    list_query: Query
    actions: tuple[tuple[str, Query], ...] = ()
    facts: tuple[FactQuery, ...] = ()
    relations: tuple[RelationSource, ...] = ()
    rollups: tuple[Rollup, ...] = ()
    watermark: Query | None = None
    changed: Query | None = None

    @property
    def action_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.actions)

    @property
    def fact_names(self) -> tuple[str, ...]:
        """Declared fact names (identity columns are known only when the list query runs)."""
        names = [c.name for fq in self.facts for c in fq.columns]
        return (*names, *(r.fact for r in self.rollups))


@dataclass(frozen=True)
class SourcesConfig:
    """A whole ``sources.yaml``."""

    file: str
    entities: Mapping[str, EntitySource]

    def entity(self, entity_type: str) -> EntitySource:
        try:
            return self.entities[entity_type]
        except KeyError:
            known = ", ".join(sorted(self.entities)) or "none"
            raise RulesError(
                [
                    Problem(
                        self.file,
                        None,
                        ("entities",),
                        f"no entity type {entity_type!r} (known: {known})",
                    )
                ]
            ) from None


def load_sources(path: str | Path) -> SourcesConfig:
    """Read and validate a sources file; raises ``RulesError`` listing every problem."""
    return _build(read_yaml_file(path))


def parse_sources(text: str, file: str = "sources.yaml") -> SourcesConfig:
    """Validate sources given as text (``file`` names it in messages)."""
    return _build(load_yaml(text, file))


def check_contract(
    config: SourcesConfig,
    entity_type: str,
    *,
    actions: Sequence[str] = (),
    facts: Sequence[str] = (),
) -> list[Problem]:
    """Problems when the sources do not provide what a rule set needs.

    Identity columns of the list query count as facts, but are only known
    once it runs, so ``facts`` here are checked against declared facts and
    rollups; pass identity names separately if needed.
    """
    problems: list[Problem] = []
    if entity_type not in config.entities:
        return [Problem(config.file, None, ("entities",), f"no entity type {entity_type!r}")]
    source = config.entities[entity_type]
    where = source.list_query
    for name in actions:
        if name not in source.action_names:
            problems.append(
                Problem(
                    config.file,
                    where.line,
                    ("entities", entity_type, "actions"),
                    f"no query for action {name!r}",
                )
            )
    for name in facts:
        if name not in source.fact_names:
            problems.append(
                Problem(
                    config.file,
                    where.line,
                    ("entities", entity_type, "facts"),
                    f"no query for fact {name!r}",
                )
            )
    return problems


# --------------------------------------------------------------------------
# Validation: plain dicts with lines -> typed model, every problem collected.


class _Builder:
    def __init__(self, file: str) -> None:
        self.file = file
        self.problems: list[Problem] = []

    def problem(self, container: Any, key: Any, path: Path_, message: str) -> None:
        self.problems.append(Problem(self.file, line_of(container, key), path, message))

    def mapping(
        self, value: Any, parent: Any, key: Any, path: Path_, allowed: Sequence[str]
    ) -> MarkedDict | None:
        if not isinstance(value, dict):
            self.problem(parent, key, path, f"expected a mapping, got {_describe(value)}")
            return None
        for k in value:
            if k not in allowed:
                self.problem(
                    value, k, (*path, k), f"unknown key {k!r} (allowed: {', '.join(allowed)})"
                )
        return value if isinstance(value, MarkedDict) else _marked(value)

    def query(
        self, value: Any, parent: Any, key: Any, path: Path_, allowed_params: frozenset[str]
    ) -> Query | None:
        line = line_of(parent, key)
        if not isinstance(value, str) or not value.strip():
            self.problem(parent, key, path, f"expected SQL text, got {_describe(value)}")
            return None
        sql = value.strip()
        # A trailing `;` is natural to write but breaks the reader's wrapping
        # (`SELECT * FROM (...) AS q`), so tolerate exactly that one.
        sql = sql[:-1].rstrip() if sql.endswith(";") else sql
        if ";" in _strip_literals(sql):
            self.problem(parent, key, path, "expected one SQL statement, found ';' inside")
            return None
        try:
            params = frozenset(sa.text(sql).compile().params)
        except sa.exc.ArgumentError as exc:  # pragma: no cover - text() accepts almost anything
            self.problem(parent, key, path, f"cannot parse SQL: {exc}")
            return None
        unknown = sorted(params - allowed_params)
        if unknown:
            allowed = ", ".join(f":{p}" for p in sorted(allowed_params))
            self.problem(
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
            self.problem(
                parent,
                key,
                path,
                f"expected a time zone name like UTC or Europe/Paris, got {_describe(value)}",
            )
            return None
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            self.problem(parent, key, path, f"unknown time zone {value!r}")
            return None
        return value

    def columns(
        self, value: Any, parent: Any, key: Any, path: Path_, reserved: Sequence[str]
    ) -> tuple[Column, ...]:
        spec = self.mapping(value, parent, key, path, allowed=_ANY)
        if spec is None:
            return ()
        if not spec:
            self.problem(parent, key, path, "expected at least one column")
        result: list[Column] = []
        for name, raw in spec.items():
            cpath = (*path, name)
            if not isinstance(name, str) or not _NAME.match(name):
                self.problem(
                    spec, name, cpath, f"expected a name in lower_snake_case, got {name!r}"
                )
                continue
            if name in reserved:
                self.problem(spec, name, cpath, f"{name!r} is reserved for the entity id")
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
                self.problem(
                    tparent,
                    tkey,
                    cpath,
                    f"expected a type ({', '.join(FACT_TYPES)}), got {_describe(type_)}",
                )
                continue
            if default is not None and not _fits(default, type_):
                self.problem(
                    raw,
                    "default",
                    (*cpath, "default"),
                    f"default must be a {type_}, got {_describe(default)}",
                )
                continue
            result.append(Column(name, type_, default))
        return tuple(result)

    def entity(
        self, name: str, raw: Any, parent: Any, path: Path_, default_tz: str
    ) -> EntitySource | None:
        body = self.mapping(raw, parent, name, path, _ENTITY_KEYS)
        if body is None:
            return None
        ok = True
        id_type = body.get("id_type", "integer")
        if id_type not in ID_TYPES:
            self.problem(
                body,
                "id_type",
                (*path, "id_type"),
                f"expected one of {', '.join(ID_TYPES)}, got {_describe(id_type)}",
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
        if "list" not in body:
            self.problem(
                parent,
                name,
                path,
                "missing key 'list': the query returning id, email and identity columns",
            )
        else:
            list_query = self.query(body["list"], body, "list", (*path, "list"), PARAMS_READ)

        actions: list[tuple[str, Query]] = []
        raw_actions = body.get("actions")
        if raw_actions is not None:
            amap = self.mapping(raw_actions, body, "actions", (*path, "actions"), _ANY)
            for action, sql in (amap or {}).items():
                apath = (*path, "actions", action)
                if not isinstance(action, str) or not _NAME.match(action):
                    self.problem(
                        amap,
                        action,
                        apath,
                        f"expected an action name in lower_snake_case, got {action!r}",
                    )
                    continue
                q = self.query(sql, amap, action, apath, PARAMS_READ)
                if q is not None:
                    actions.append((action, q))

        facts: list[FactQuery] = []
        seen: dict[str, Path_] = {}
        raw_facts = body.get("facts")
        if raw_facts is not None:
            if not isinstance(raw_facts, list):
                self.problem(
                    body,
                    "facts",
                    (*path, "facts"),
                    f"expected a list of {{sql, columns}}, got {_describe(raw_facts)}",
                )
            else:
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

        relations: list[RelationSource] = []
        raw_rel = body.get("relations")
        if raw_rel is not None:
            rmap = self.mapping(raw_rel, body, "relations", (*path, "relations"), _ANY)
            for rel, rraw in (rmap or {}).items():
                rpath = (*path, "relations", rel)
                if not isinstance(rel, str) or not _NAME.match(rel):
                    self.problem(
                        rmap,
                        rel,
                        rpath,
                        f"expected the related entity type in lower_snake_case, got {rel!r}",
                    )
                    continue
                rbody = self.mapping(rraw, rmap, rel, rpath, _FACT_QUERY_KEYS)
                if rbody is None:
                    continue
                q = self._required_query(rbody, rmap, rel, rpath)
                cols = self._required_columns(rbody, rmap, rel, rpath, ("id", "related_id"))
                if q is not None:
                    relations.append(RelationSource(rel, q, cols))

        rollups: list[Rollup] = []
        raw_roll = body.get("rollups")
        if raw_roll is not None:
            rmap = self.mapping(raw_roll, body, "rollups", (*path, "rollups"), _ANY)
            by_name = {r.name: r for r in relations}
            for fact, rraw in (rmap or {}).items():
                rpath = (*path, "rollups", fact)
                rollup = self._rollup(fact, rraw, rmap, rpath, by_name, raw_rel)
                if rollup is not None:
                    self._unique(seen, fact, rmap, rpath)
                    rollups.append(rollup)

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
            tuple(actions),
            tuple(facts),
            tuple(relations),
            tuple(rollups),
            watermark,
            changed,
        )

    def _required_query(self, body: MarkedDict, parent: Any, key: Any, path: Path_) -> Query | None:
        if "sql" not in body:
            self.problem(parent, key, path, "missing key 'sql'")
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
        if "columns" not in body:
            self.problem(
                parent,
                key,
                path,
                f"missing key 'columns' (name: type, the type one of {', '.join(FACT_TYPES)})",
            )
            return ()
        return self.columns(body["columns"], body, "columns", (*path, "columns"), reserved)

    def _unique(self, seen: dict[str, Path_], name: str, container: Any, path: Path_) -> None:
        if name in seen:
            first = " ==> ".join(str(p) for p in seen[name])
            self.problem(container, None, path, f"fact {name!r} is already given by {first}")
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
        if not isinstance(fact, str) or not _NAME.match(fact):
            self.problem(
                parent, fact, path, f"expected a fact name in lower_snake_case, got {fact!r}"
            )
            return None
        body = self.mapping(raw, parent, fact, path, _ROLLUP_KEYS)
        if body is None:
            return None
        relation = body.get("relation")
        if relation is None:
            self.problem(parent, fact, path, "missing key 'relation'")
            return None
        if relation not in relations:
            if not (isinstance(raw_rel, dict) and relation in raw_rel):  # else already reported
                known = ", ".join(sorted(relations)) or "none declared"
                self.problem(
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
                    self.problem(
                        body,
                        "status",
                        (*path, "status"),
                        f"expected a status or pattern like 'ongoing.*', got {_describe(item)}",
                    )
                else:
                    statuses.append(item)
        where: list[tuple[str, tuple[FactValue, ...]]] = []
        raw_where = body.get("where")
        columns = {c.name: c for c in relations[relation].columns}
        if raw_where is not None:
            wmap = self.mapping(raw_where, body, "where", (*path, "where"), _ANY)
            for column, value in (wmap or {}).items():
                wpath = (*path, "where", column)
                if column not in columns:
                    self.problem(
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
                    self.problem(
                        wmap, column, wpath, f"expected {type_} value(s), got {_describe(value)}"
                    )
                    continue
                where.append((column, values))
        return Rollup(fact, relation, tuple(statuses), tuple(where))


class _Any(tuple[str, ...]):
    """Sentinel for mappings whose keys are names, not a fixed set."""

    def __contains__(self, item: object) -> bool:
        return True


_ANY = _Any()


def _build(doc: Document) -> SourcesConfig:
    builder = _Builder(doc.file)
    builder.problems.extend(doc.problems)
    entities: dict[str, EntitySource] = {}
    top = builder.mapping(doc.data, None, None, (), _TOP_KEYS) if doc.data is not None else None
    if doc.data is None:
        builder.problem(None, None, (), "the file is empty; expected a mapping with 'entities'")
    if top is not None:
        tz = "UTC"
        if "naive_timezone" in top:
            tz = (
                builder.timezone(top["naive_timezone"], top, "naive_timezone", ("naive_timezone",))
                or "UTC"
            )
        raw_entities = top.get("entities")
        if raw_entities is None:
            builder.problem(top, None, (), "missing key 'entities'")
        else:
            emap = builder.mapping(raw_entities, top, "entities", ("entities",), _ANY)
            if emap is not None and not emap:
                builder.problem(top, "entities", ("entities",), "expected at least one entity type")
            for name, raw in (emap or {}).items():
                path = ("entities", name)
                if not isinstance(name, str) or not _NAME.match(name):
                    builder.problem(
                        emap,
                        name,
                        path,
                        f"expected an entity type in lower_snake_case, got {name!r}",
                    )
                    continue
                entity = builder.entity(name, raw, emap, path, tz)
                if entity is not None:
                    entities[name] = entity
    errors = [p for p in builder.problems if not p.warning]
    if errors:
        # Reading order: a person fixes a file top to bottom.
        raise RulesError(sorted(builder.problems, key=lambda p: p.line or 0))
    return SourcesConfig(doc.file, entities)


def _fits(value: Any, type_: FactType) -> bool:
    if type_ == "bool":
        return isinstance(value, bool)
    if type_ == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    # Instants have no literal form in this file: they come from the database.
    return type_ == "string" and isinstance(value, str)


def _describe(value: Any) -> str:
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


_LITERAL = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|--[^\n]*")


def _strip_literals(sql: str) -> str:
    """SQL with string literals, quoted names and line comments removed."""
    return _LITERAL.sub("", sql)


def _marked(value: dict[Any, Any]) -> MarkedDict:
    marked = MarkedDict(value)
    return marked
