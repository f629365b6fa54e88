"""Which entities a full pass can leave alone, and how it finds them.

An entity is *settled* when its evaluation is stored and Mailchimp accepted
its contribution; the compiled SQL's row digest is then recorded with it
(``entity_state.row_fp``). A later full pass counts it as read and leaves it
alone when its row has the same digest, no change of the stored evaluation
is due, and it has no retry and no event in the window. The test is made in
one of three places, whichever keeps the most work in the database:

* in the SQL, when the state store lives in the application's database: the
  settled entities' rows never come back (``joined``, ``without_gone``);
* by a merge, when it lives apart: the SQL's ``(id, digest)`` and the stored
  digests, both in id order, walked together (``Settled.merge``); only the
  ids that differ are evaluated;
* in Python, row by row, for whatever rows come back (``decode_unsettled``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from itertools import islice
from typing import Any

from sync.daemon.cycle_summary import CycleSummary
from sync.daemon.type_run import TypeRun
from sync.sql.compiled import CompiledEntity, SqlEvaluation, contribution
from sync.sql.evaluator import SqlEvaluator
from sync.sql.expr import to_micros
from sync.state.entities import StoredRow
from sync.state.store import StateStore

#: A result row of the compiled SQL, with the statement that decodes it.
Row = tuple[CompiledEntity, Sequence[Any]]

#: A full pass evaluates the whole population again rather than the ids
#: its digests found different when more than this many differ: past it,
#: evaluating by ids costs more than evaluating everyone (at 1M users, 100k
#: ids take 5.8 s, 300k 18 s and the whole population 10 s).
MAX_UNSETTLED = 100_000
#: ... and, once this many ids are read, as soon as most differ or the
#: share that differs, applied to the stored population, passes it.
_EARLY_LOOK = 10_000
#: Before the digests of the whole population are asked for (the query
#: sorts them all before giving the first: 6 to 8 s at 1M users), when the
#: stored digests were computed under another basis (new rules), the first
#: this many stored ids are evaluated alone (0.2 to 0.3 s); when the share
#: of them that differ, projected on the stored population, passes
#: ``MAX_UNSETTLED``, the merge is not even started.
_SAMPLE = 2_000


def basis_key(entity_type: str) -> str:
    """The watermark that holds the basis of a type's stored digests."""
    return f"digest-basis:{entity_type}"


class Settled:
    """The settled test of one cycle, and its counts."""

    def __init__(
        self,
        state: StateStore,
        evaluator: SqlEvaluator | None,
        summary: CycleSummary,
        *,
        now: datetime,
        preview: bool = False,
    ) -> None:
        self.state = state
        self.evaluator = evaluator
        self.summary = summary
        self.now = now
        self._now_us = to_micros(now)
        #: A preview (``mailsync plan``) shows what Mailchimp would get, not
        #: what the state store would write: an entity is left alone when
        #: the contribution part of its digest is unchanged, even if the
        #: rest (instants, next change) moved (``contribution``).
        self.preview = preview
        self._same = _same_contribution if preview else _same_row

    def count(self, run: TypeRun, settled: int) -> None:
        """``settled`` entities of ``run``'s type were read and left alone."""
        if settled:
            run.stored_seen += settled
            self.summary.entities_read[run.entity.name] += settled
            self.summary.entities_settled[run.entity.name] += settled

    def merges(self, run: TypeRun) -> bool:
        """Whether a full pass merges digests first: the application's
        database computes them (PostgreSQL) and something is stored."""
        assert self.evaluator is not None
        return self.evaluator.dialect == "postgresql" and bool(run.stored_before)

    def merge(self, run: TypeRun) -> list[str] | None:
        """One ordered walk through the compiled SQL's ``(id, digest)`` and
        the stored ``(id, digest, due)``, both in the ids' byte order:
        the settled entities are counted (the test of ``decode_unsettled``),
        the stored ids the SQL no longer gives are kept in ``run.gone``, and the
        ids left to evaluate are returned. None when more than
        ``MAX_UNSETTLED`` differ, or will (``_EARLY_LOOK``): the whole
        population is evaluated then, as without digests. The byte order of
        the ids has nothing to do with the rules, so the share of the ids
        read so far that differ is a fair guess of the final count."""
        assert self.evaluator is not None
        name = run.entity.name
        must = run.forced | run.occurrences.keys()
        population = run.stored_before or 0
        same = self._same
        if (
            population > MAX_UNSETTLED
            and self.state.get_watermark(basis_key(name)) != run.digest_basis
            and self._too_many_will_differ(run, must, population)
        ):
            return None
        left: list[str] = []
        gone: list[str] = []
        settled = 0
        computed = self.evaluator.digests(name, now=self.now)
        stored = self.state.stored_digests(name, self.now)
        try:
            at = next(stored, None)
            for ident, digest in computed:
                while at is not None and at[0] < ident:
                    gone.append(at[0])
                    at = next(stored, None)
                if at is not None and at[0] == ident:
                    _, row_fp, due = at
                    at = next(stored, None)
                    if same(row_fp, digest) and not due and ident not in must:
                        settled += 1
                        continue
                left.append(ident)
                read = len(left) + settled
                if len(left) > MAX_UNSETTLED or (
                    read >= _EARLY_LOOK
                    and (len(left) * 2 > read or len(left) * population > MAX_UNSETTLED * read)
                ):
                    # Too many differ (new rules, a store just filled): the
                    # whole population is evaluated, without reading on.
                    return None
            while at is not None:
                gone.append(at[0])
                at = next(stored, None)
        finally:
            computed.close()
            stored.close()
        run.gone = gone
        self.count(run, settled)
        return left

    def _too_many_will_differ(self, run: TypeRun, must: set[str], population: int) -> bool:
        """Whether, among the first ``_SAMPLE`` stored ids (byte order, which
        has nothing to do with the rules), so many differ that more than
        ``MAX_UNSETTLED`` will: their rows alone are evaluated (a query by
        ids, 0.2 to 0.3 s at 1M users) and compared as the merge would."""
        assert self.evaluator is not None
        stored = self.state.stored_digests(run.entity.name, self.now)
        try:
            sample = list(islice(stored, _SAMPLE))
        finally:
            stored.close()
        if not sample:
            return False
        rows = self.evaluator.rows(
            run.entity.name, now=self.now, ids=[ident for ident, _, _ in sample], fingerprint=True
        )
        digests = {
            str(row[0]): row[compiled.fp_column]
            for compiled, row in rows
            if compiled.fp_column is not None
        }
        same = self._same
        differ = sum(
            1
            for ident, row_fp, due in sample
            if due or ident in must or (ident in digests and not same(row_fp, digests[ident]))
        )
        return differ * population > MAX_UNSETTLED * len(sample)

    def decode_unsettled(
        self, run: TypeRun, chunk: list[Row], ids: list[str], stored: Mapping[str, StoredRow]
    ) -> list[SqlEvaluation]:
        """The chunk's rows decoded, but for the entities already settled:
        their row digest is the one recorded when they were last settled,
        and no change is due, no retry and no event in the window. Those are
        counted as read and left alone."""
        left: list[SqlEvaluation] = []
        settled = 0
        now_us = self._now_us
        same = self._same
        for (compiled, row), ident in zip(chunk, ids, strict=True):
            if compiled.fp_column is not None:
                before = stored.get(ident)
                if (
                    before is not None
                    and before.row_fp is not None
                    and same(before.row_fp, row[compiled.fp_column])
                    and ident not in run.forced
                    and ident not in run.occurrences
                    and not before.due(now_us)
                ):
                    settled += 1
                    if run.seen is not None:
                        run.seen.add(ident)
                    continue
            left.append(compiled.decode(row))
        self.count(run, settled)
        return left


def _same_row(stored: str | None, computed: str) -> bool:
    return stored == computed


def _same_contribution(stored: str | None, computed: str) -> bool:
    part = contribution(stored)
    return part is not None and part == contribution(computed)


def without_gone(run: TypeRun, rows: list[Row]) -> list[Row]:
    """The rows of listed entities; the others (null but for the joined
    stored columns) are stored entities the list query no longer gives,
    kept in ``run.gone``."""
    assert run.gone is not None
    at = rows[0][0].stored_column
    assert at is not None
    listed: list[Row] = []
    for compiled, row in rows:
        if row[at] is not None:
            run.stored_returned += 1
        if row[0] is None:
            run.gone.append(row[at])
        else:
            listed.append((compiled, row))
    return listed


def joined(rows: list[Row], ids: list[str]) -> dict[str, StoredRow] | None:
    """The stored rows the compiled SQL joined from the state store (when it
    lives in the same database), by id; None when not joined."""
    if not rows or rows[0][0].stored_column is None:
        return None
    at = rows[0][0].stored_column
    return {
        ident: StoredRow(*row[at + 1 : at + 5])
        for (_, row), ident in zip(rows, ids, strict=True)
        if row[at] is not None
    }
