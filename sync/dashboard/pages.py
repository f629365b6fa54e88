"""The dashboard's HTML, rendered on the server from plain data.

No template engine: each page is a few tables and an SVG, and ``html.escape``
on every value that comes from the data is all the templating needed. Pages
share one layout (``page``): a skip link, a navigation bar, a ``<main>``, and
the style sheet inline, so that nothing is fetched from anywhere else.
Colours keep a 4.5:1 contrast or more, focus is visible, every control has
a label.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from html import escape
from typing import Any
from urllib.parse import urlencode

from sync.evaluate.explain import Explanation
from sync.mailchimp.ledger import PushFailure
from sync.state.cycles import Cycle
from sync.state.entities import EntityState

NAV = (("lifecycle", "Lifecycle"), ("trends", "Trends"), ("person", "Person"),
       ("operations", "Operations"))  # fmt: skip

STYLE = """
:root{color-scheme:light}
body{font-family:system-ui,'DejaVu Sans',Arial,sans-serif;margin:0;color:#1f2328;background:#fff}
a{color:#0550ae}
a:focus-visible,button:focus-visible,input:focus-visible,select:focus-visible{
outline:3px solid #0969da;outline-offset:2px}
.skip{position:absolute;left:-999px}.skip:focus{left:8px;top:8px;background:#fff;padding:4px}
header{background:#24292f;color:#fff;padding:8px 16px;display:flex;gap:24px;align-items:center}
header a{color:#fff;text-decoration:none;padding:4px 8px;border-radius:4px}
header a[aria-current=page]{background:#0550ae}
header .brand{font-weight:bold}
main{padding:12px 16px}
h1{font-size:1.4rem;margin:8px 0}h2{font-size:1.15rem;margin:18px 0 6px}
table{border-collapse:collapse;margin:6px 0}
th,td{border:1px solid #d0d7de;padding:3px 8px;text-align:left;vertical-align:top}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
th{background:#f6f8fa}
.muted{color:#57606a}.bad{color:#a40e26;font-weight:bold}.ok{color:#116329}
.diagram{overflow-x:auto;border:1px solid #d0d7de;padding:4px}
.diagram svg{max-width:100%;height:auto}
.charts{display:flex;flex-wrap:wrap;gap:12px}
form.inline{display:flex;gap:8px;align-items:center;margin:8px 0}
input,select,button{font:inherit;padding:3px 6px}
"""


def h(value: object) -> str:
    return escape("" if value is None else str(value))


def when(value: datetime | None) -> str:
    return "never" if value is None else f"{value:%Y-%m-%d %H:%M:%S} UTC"


def link(path: str, **query: str) -> str:
    return path + ("?" + urlencode(query) if query else "")


def page(title: str, current: str, body: str, *, now: datetime) -> str:
    nav = "".join(
        f'<a href="/{key}"{" aria-current=page" if key == current else ""}>{label}</a>'
        for key, label in NAV
    )
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{h(title)} · mailsync</title><style>{STYLE}</style></head><body>"
        '<a class="skip" href="#main">Skip to content</a>'
        f'<header><span class="brand">mailsync</span><nav aria-label="Pages">{nav}</nav>'
        f'<span class="muted" style="color:#d0d7de">as of {h(when(now))}</span></header>'
        f'<main id="main"><h1>{h(title)}</h1>{body}</main></body></html>\n'
    )


def table(
    headers: Sequence[str], rows: Iterable[Sequence[object]], *, numeric: Iterable[int] = (),
    caption: str | None = None, raw: Iterable[int] = (),
) -> str:  # fmt: skip
    """A table; columns in ``numeric`` align right, those in ``raw`` are HTML already."""
    nums, html_cols = set(numeric), set(raw)
    head = "".join(
        f'<th scope="col"{" class=n" if i in nums else ""}>{h(t)}</th>'
        for i, t in enumerate(headers)
    )
    body = "".join(
        "<tr>"
        + "".join(
            f"<td{' class=n' if i in nums else ''}>{v if i in html_cols else h(v)}</td>"
            for i, v in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    cap = f"<caption>{h(caption)}</caption>" if caption else ""
    thead = f"<thead><tr>{head}</tr></thead>" if any(headers) else ""
    return f"<table>{cap}{thead}<tbody>{body}</tbody></table>"


def entity_tabs(path: str, entities: Sequence[str], current: str, **query: str) -> str:
    if len(entities) < 2:
        return ""
    links = " · ".join(
        f'<a href="{h(link(path, entity=e, **query))}"'
        f"{' aria-current=true' if e == current else ''}>{h(e)}</a>"
        for e in entities
    )
    return f"<p>Entity type: {links}</p>"


# -- Lifecycle -------------------------------------------------------------------


def lifecycle_body(
    entities: Sequence[str],
    entity: str,
    svg: str,
    counts: Mapping[str | None, int],
    order: Sequence[str],
    entries: Mapping[str, tuple[int, int]],
    has_history: bool,
) -> str:
    total = sum(counts.values())
    known = [(s, counts.get(s, 0)) for s in order]
    extra = [(s, n) for s, n in counts.items() if s not in order]
    rows = []
    for status, n in [*known, *extra]:
        label = "(no status)" if status is None else status
        href = link("/status", entity=entity, status="" if status is None else status)
        day, week = entries.get(status or "", (0, 0))
        rows.append(
            (f'<a href="{h(href)}">{h(label)}</a>', f"{n:,}",
             f"{100 * n / total:.1f}%" if total else "0%", f"{day:,}", f"{week:,}")
        )  # fmt: skip
    note = (
        ""
        if has_history
        else '<p class="muted">No history yet: flows along the edges appear once the daemon '
        "has run cycles with this version.</p>"
    )
    return (
        entity_tabs("/lifecycle", entities, entity)
        + f"<p>{total:,} {h(entity)} entities. Each box gives its live count and share; each "
        "edge how many entities took it in the last 24 hours and 7 days. Select a status to "
        "list a sample of its entities.</p>"
        + note
        + f'<div class="diagram">{svg}</div>'
        + "<h2>Statuses</h2>"
        + table(
            ["status", "entities", "share", "entered, 24 h", "entered, 7 days"],
            rows,
            numeric=(1, 2, 3, 4),
            raw=(0,),
            caption=f"{entity}: entities per status",
        )
    )


def status_body(entity: str, status: str | None, total: int, sample: Sequence[EntityState]) -> str:
    label = "(no status)" if status is None else status
    rows = [
        (
            f'<a href="{h(link("/person", q=s.entity_id, entity=entity))}">{h(s.entity_id)}</a>',
            h(s.email or ""),
            h(when(s.status_since)),
            h(when(s.next_change_at) if s.next_change_at else "none by time"),
        )
        for s in sample
    ]
    return (
        f'<p><a href="{h(link("/lifecycle", entity=entity))}">← {h(entity)} lifecycle</a></p>'
        f"<p>{total:,} entities in <strong>{h(label)}</strong>; a sample of {len(sample)}, "
        "latest entrants first:</p>"
        + table(["id", "email", "in this status since", "next change"], rows, raw=(0, 1, 2, 3))
    )


# -- Person ------------------------------------------------------------------------


def person_form(query: str) -> str:
    return (
        '<form class="inline" method="get" action="/person" role="search">'
        '<label for="q">Email or id</label>'
        f'<input id="q" name="q" type="search" value="{h(query)}" size="32" required>'
        "<button type=submit>Explain</button></form>"
    )


def person_body(query: str, explanations: Sequence[Explanation], message: str | None) -> str:
    out = [person_form(query)]
    if message:
        out.append(f'<p role="status">{h(message)}</p>')
    for ex in explanations:
        data: dict[str, Any] = ex.as_json()
        out.append(f"<h2>{h(data['entity_type'])} {h(data['id'])} "
                   f"&lt;{h(data['email'] or 'no email')}&gt;</h2>")  # fmt: skip
        facts = [
            ("status", data["status"] or "none"),
            ("since", data["status_since"] or "unknown"),
            ("ladder of", f"{data['state']} (entered {data['state_entered_at']})"),
            ("next change by time", data["next_change_at"] or "none"),
        ]
        if data["reinit"]:
            facts.append(
                ("re-initialised", f"{data['reinit']['status']} at {data['reinit']['at']}")
            )
        out.append(table(["", ""], facts))
        out.append("<h3>Timeline</h3>")
        steps = [(s["at"], s["cause"], s["status"] or "(none)") for s in data["timeline"]]
        if data["timeline_truncated"]:
            out.append('<p class="muted">Earlier entries left out.</p>')
        out.append(
            table(["at", "cause", "status entered"], steps) if steps else "<p>Nothing yet.</p>"
        )
        mc = data["mailchimp"]
        sent = set(mc.get("events_sent", []))
        if data["events"]:
            out.append("<h3>Events</h3>")
            out.append(table(
                ["event", "at", "sent to Mailchimp"],
                [(e["name"], e["at"], "sent" if e["key"] in sent else "not sent yet")
                 for e in data["events"]],
            ))  # fmt: skip
        out.append("<h3>Mailchimp</h3>")
        if mc.get("pushed_at"):
            out.append(f"<p>Last push Mailchimp accepted: {h(mc['pushed_at'])}</p>")
            fields = [(tag, repr(value)) for tag, value in mc["fields"].items()]
            fields += [("tags", ", ".join(mc["tags"]) or "none")]
            out.append(table(["merge field", "accepted value"], fields))
        else:
            out.append("<p>Nothing accepted by Mailchimp yet.</p>")
        out.append(mailchimp_side_body(data["email"], mc.get("mailchimp_side") or {}))
        wanted = [(tag, repr(value)) for tag, value in data["merge_fields"].items()]
        if wanted:
            out.append(table(["merge field", "value the rules give now"], wanted))
        failure = mc.get("failure")
        if failure:
            kind = "permanent" if failure["permanent"] else "transient"
            retry = failure["next_retry_at"] or "when the data changes"
            out.append(
                f'<p class="bad">Pending error ({kind}): {h(failure["reason"])} '
                f"(failed {h(failure['failed_at'])}, retry {h(retry)})</p>"
            )
    return "".join(out)


def mailchimp_side_body(email: str | None, side: Mapping[str, Any]) -> str:
    """What changed in Mailchimp itself (webhooks, the poll): the member's
    status there (unsubscribed, cleaned, archived), a moved address, profile
    edits, recent webhooks. Empty when nothing is known."""
    if not side:
        return ""
    out = []
    if side["address"] != (email or "").strip().lower():
        out.append(f"<p>Address changed in Mailchimp: pushes go to {h(side['address'])}</p>")
    if side["status"]:
        reason = f", reason {side['reason']}" if side["reason"] else ""
        css = ' class="bad"' if side["status"] in ("unsubscribed", "cleaned", "archived") else ""
        out.append(
            f"<p{css}>In Mailchimp: <strong>{h(side['status'])}</strong> since "
            f"{h(side['status_at'])} (from {h(side['source'])}{h(reason)})</p>"
        )
    edits = [(tag, repr(value)) for tag, value in side["profile_edits"].items()]
    if edits:
        out.append(table(["merge field", "edited in Mailchimp"], edits))
    hooks = [(w["type"], w["at"]) for w in side["webhooks"]]
    if hooks:
        out.append(table(["webhook", "at"], hooks))
    return "".join(out)


def stored_body(query: str, found: Sequence[EntityState], note: str) -> str:
    """What the state store alone says of ``query`` (no application database)."""
    rows = [
        (s.entity_type, s.entity_id, s.email or "", s.status or "(none)", when(s.status_since))
        for s in found
    ]
    listing = (
        table(["entity", "id", "email", "status", "since"], rows)
        if rows
        else f"<p>No entity {h(query)} in the state store.</p>"
    )
    return person_form(query) + f'<p role="status">{h(note)}</p>' + listing


# -- Operations ----------------------------------------------------------------------


def _calls(counts: Mapping[str, Any]) -> str:
    calls = counts.get("api_calls") or {}
    return ", ".join(f"{k} {v}" for k, v in sorted(calls.items())) or "none"


def operations_body(
    cycles: Sequence[Cycle],
    failure_counts: Mapping[str, int],
    permanent: Sequence[PushFailure],
    due: int,
    leaders: Sequence[tuple[str, str]],
    rules: Sequence[tuple[str, str]],
) -> str:
    rows = []
    for c in cycles:
        k = c.counts
        read = ", ".join(f"{n:,} {t}" for t, n in sorted((k.get("entities_read") or {}).items()))
        failed = sum((k.get("entities_failed") or {}).values())
        outcome = ('<span class="ok">ok</span>' if c.ok else
                   '<span class="bad">failed</span>' if c.ok is False else "running")  # fmt: skip
        rows.append((
            h(when(c.started_at)), "full" if k.get("full") else "incremental", outcome,
            h(k.get("duration_s", "")), h(read or "nothing"), h(k.get("members_pushed", 0)),
            h(k.get("members_failed", 0)), h(k.get("events_sent", 0)), h(_calls(k)),
            h(failed), h(k.get("backlog", 0)),
        ))  # fmt: skip
    summary = [
        ("due now (backlog)", f"{due:,}"),
        ("failed pushes, transient (will retry)", f"{failure_counts.get('transient', 0):,}"),
        ("failed pushes, permanent", f"{failure_counts.get('permanent', 0):,}"),
        ("pushes awaiting confirmation", f"{failure_counts.get('pending', 0):,}"),
        ("events whose outcome is unknown", f"{failure_counts.get('events_pending', 0):,}"),
    ]
    leader_rows = [(holder, until) for holder, until in leaders] or [("nobody", "")]
    return (
        "<h2>Now</h2>" + table(["", ""], summary, numeric=(1,))
        + "<h2>Leader</h2>" + table(["holder", "holds it"], leader_rows)
        + "<h2>Rules in force</h2>" + table(["", ""], rules)
        + f"<h2>Recent cycles ({len(cycles)})</h2>"
        + table(
            ["started", "kind", "outcome", "seconds", "entities read", "pushed", "push failed",
             "events sent", "API calls by answer", "records failed", "backlog"],
            rows, numeric=(3, 5, 6, 7, 9, 10), raw=range(11),
        )
        + f"<h2>Permanent failures (latest {len(permanent)})</h2>"
        + (
            table(
                ["member", "reason", "failed at", "attempts"],
                [(f.email, f.reason[:300], when(f.failed_at), f.attempts) for f in permanent],
                numeric=(3,),
            )
            if permanent
            else "<p>None.</p>"
        )
    )  # fmt: skip


# -- Trends --------------------------------------------------------------------------


def trends_body(
    entities: Sequence[str], entity: str, days: str, charts: Sequence[str], points: int
) -> str:
    choices = "".join(
        f'<option value="{v}"{" selected" if v == days else ""}>{label}</option>'
        for v, label in (("1", "24 hours"), ("7", "7 days"), ("30", "30 days"),
                         ("90", "90 days"), ("365", "a year"), ("all", "everything"))
    )  # fmt: skip
    form = (
        '<form class="inline" method="get" action="/trends">'
        f'<input type="hidden" name="entity" value="{h(entity)}">'
        f'<label for="days">Period</label><select id="days" name="days">{choices}</select>'
        "<button type=submit>Show</button></form>"
    )
    if not charts:
        return (
            entity_tabs("/trends", entities, entity, days=days)
            + form
            + (
                "<p>No history for this period yet: "
                "the daemon records a point after each cycle.</p>"
            )
        )
    return (
        entity_tabs("/trends", entities, entity, days=days) + form
        + f"<p>{points} points (hourly for the last 90 days, daily before). One chart per "
        "status with its ladder's steps.</p>"
        + '<div class="charts">' + "".join(charts) + "</div>"
    )  # fmt: skip
