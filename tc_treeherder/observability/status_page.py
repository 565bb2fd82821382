"""HTML of the status and explain pages, rendered on the server from the status snapshot.

Self-contained: inline CSS, an inline SVG chart and a few lines of script that re-fetch the live part of
the page every few seconds (no library, nothing from another host). Without script the page refreshes
itself with a meta tag. Every value from the data is escaped.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any
from urllib.parse import quote

import orjson

REFRESH_SECONDS = 5

# Treeherder's own colours for results, so the page reads like the place jobs end up.
RESULT_COLORS = {"success": "#2e7d32", "fail": "#e65100", "testfailed": "#e65100", "busted": "#c62828",
                 "exception": "#6a1b9a", "canceled": "#ad1457", "superseded": "#5d4037", "retry": "#1565c0",
                 "unknown": "#607d8b"}
STATE_COLORS = {"pending": "#9e9e9e", "running": "#1976d2", "unscheduled": "#bdbdbd"}

CSS = """
:root{--bg:#f4f6f9;--card:#fff;--ink:#1f2933;--muted:#6b7785;--line:#e3e8ee;--ok:#2e7d32;--bad:#c62828;
--warn:#ef6c00;--accent:#1565c0;--jobs:#2e7d32;--events:#1565c0;--rej:#c62828}
*{box-sizing:border-box}body{margin:0;background:var(--bg);color:var(--ink);
font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif}
header{background:#17212b;color:#fff;padding:14px 28px;display:flex;align-items:center;gap:16px}
header h1{font-size:18px;margin:0;font-weight:600;letter-spacing:.2px}header .sub{color:#9fb0c0;font-size:13px}
header .grow{flex:1}.pill{padding:4px 12px;border-radius:999px;font-weight:600;font-size:13px}
.pill.ok{background:#e8f5e9;color:var(--ok)}.pill.bad{background:#ffebee;color:var(--bad)}
main{padding:20px 28px;max-width:1280px;margin:0 auto}
.kpis{display:grid;grid-template-columns:repeat(6,1fr);gap:14px;margin-bottom:16px}
.card{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:14px 16px;
box-shadow:0 1px 2px rgba(16,24,40,.04)}
.kpi .label{color:var(--muted);font-size:12px;text-transform:uppercase;letter-spacing:.6px}
.kpi .value{font-size:26px;font-weight:650;margin-top:2px;font-variant-numeric:tabular-nums}
.kpi .rate{color:var(--muted);font-size:12px}
.grid{display:grid;grid-template-columns:1fr 1fr;gap:16px;margin-bottom:16px}
h2{font-size:13px;text-transform:uppercase;letter-spacing:.7px;color:var(--muted);margin:0 0 10px}
table{width:100%;border-collapse:collapse;font-variant-numeric:tabular-nums}
td,th{padding:6px 8px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
th{font-size:12px;color:var(--muted);font-weight:600}td.n,th.n{text-align:right;white-space:nowrap}
tr:last-child td{border-bottom:none}
.chip{display:inline-block;padding:2px 9px;border-radius:999px;color:#fff;font-size:12px;margin:2px 4px 2px 0}
.chip b{font-weight:700;margin-left:4px}
.bar{height:8px;border-radius:4px;background:#eef2f6;overflow:hidden;min-width:60px}
.bar span{display:block;height:100%;background:var(--rej)}
.lag .bar span{background:var(--warn)}
.dot{display:inline-block;width:9px;height:9px;border-radius:50%;margin-right:8px}
.dot.ok{background:var(--ok)}.dot.bad{background:var(--bad)}
.muted{color:var(--muted)}.reason{font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:12.5px;
word-break:break-word}
.badge{font-size:11px;padding:1px 7px;border-radius:4px;background:#eef2f6;color:#334;white-space:nowrap}
.badge.rejected{background:#ffebee;color:var(--bad)}.badge.ignored{background:#fff8e1;color:#8d6e00}
a{color:var(--accent);text-decoration:none}a:hover{text-decoration:underline}
.legend span{margin-right:14px;font-size:12px;color:var(--muted)}.legend i{display:inline-block;width:18px;
height:3px;vertical-align:middle;margin-right:5px;border-radius:2px}
.parts{display:flex;flex-wrap:wrap;gap:6px;margin-top:6px}.part{font-size:11.5px;background:#f7f9fb;
border:1px solid var(--line);border-radius:6px;padding:2px 7px}.part.behind{border-color:#ffcc80;background:#fff3e0}
footer{color:var(--muted);font-size:12px;text-align:center;padding:8px 0 24px}
.empty{color:var(--muted);font-style:italic;padding:8px 0}
form.explain{display:flex;gap:8px}form.explain input{flex:1;padding:6px 10px;border:1px solid var(--line);
border-radius:6px;font:inherit}form.explain button{padding:6px 14px;border:0;border-radius:6px;
background:var(--accent);color:#fff;font:inherit;cursor:pointer}
pre{background:#f7f9fb;border:1px solid var(--line);border-radius:8px;padding:10px;overflow:auto;font-size:12px}
@media (max-width:900px){.kpis{grid-template-columns:repeat(3,1fr)}.grid{grid-template-columns:1fr}}
"""

SCRIPT = """
(function(){var live=document.getElementById('live');setInterval(function(){
fetch(location.pathname+'?fragment=1',{cache:'no-store'}).then(function(r){return r.ok?r.text():null})
.then(function(t){if(t){var d=document.createElement('div');d.innerHTML=t;var m=d.querySelector('#live');
if(m){live.innerHTML=m.innerHTML;var s=d.querySelector('#pill');if(s){document.getElementById('pill').outerHTML=
s.outerHTML}}}}).catch(function(){var p=document.getElementById('pill');if(p){p.className='pill bad';
p.textContent='worker unreachable'}})},REFRESH_MS);})();
""".replace("REFRESH_MS", str(REFRESH_SECONDS * 1000))


def _n(value: float) -> str:
    return f"{int(value):,}"


def _rate(value: float) -> str:
    return f"{value:,.1f}/s" if value < 100 else f"{value:,.0f}/s"


def _ago(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 90:
        return f"{seconds}s"
    if seconds < 5400:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h {seconds % 3600 // 60}m"


def chart(points: Sequence[Mapping[str, float]], width: int = 760, height: int = 170) -> str:
    """Events, jobs and rejections per second over the sampled window, as an inline SVG."""
    left, right, top, bottom = 44, 10, 10, 24
    plot_w, plot_h = width - left - right, height - top - bottom
    series = (("events", "var(--events)"), ("jobs", "var(--jobs)"), ("rejected", "var(--rej)"))
    peak = max([p[name] for p in points for name, _ in series] + [1.0])
    scale = _nice(peak)
    parts = [f'<svg viewBox="0 0 {width} {height}" width="100%" role="img" aria-label="throughput" '
             f'preserveAspectRatio="none" style="display:block">']
    for i in range(5):
        y = top + plot_h * i / 4
        label = scale * (4 - i) / 4
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e3e8ee"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="10" fill="#6b7785">'
                     f'{_tick(label)}</text>')
    if len(points) >= 2:
        t0, t1 = points[0]["at"], points[-1]["at"]
        span = max(t1 - t0, 1e-9)
        for name, color in series:
            coords = " ".join(f"{left + plot_w * (p['at'] - t0) / span:.1f},{top + plot_h * (1 - p[name] / scale):.1f}"
                              for p in points)
            if name == "events":
                area = f"{left:.1f},{top + plot_h:.1f} {coords} {left + plot_w:.1f},{top + plot_h:.1f}"
                parts.append(f'<polygon points="{area}" fill="{color}" opacity="0.08"/>')
            parts.append(f'<polyline points="{coords}" fill="none" stroke="{color}" stroke-width="2" '
                         f'stroke-linejoin="round"/>')
        parts.append(f'<text x="{left}" y="{height - 6}" font-size="10" fill="#6b7785">-{_ago(span)}</text>')
        parts.append(f'<text x="{width - right}" y="{height - 6}" font-size="10" fill="#6b7785" '
                     f'text-anchor="end">now</text>')
    else:
        parts.append(f'<text x="{left + plot_w / 2}" y="{top + plot_h / 2}" text-anchor="middle" font-size="12" '
                     f'fill="#6b7785">collecting samples (one every few seconds)</text>')
    parts.append("</svg>")
    return "".join(parts)


def _tick(value: float) -> str:
    """An axis label: whole numbers as such, small fractions with one decimal."""
    return f"{value:,.0f}" if value == int(value) or value >= 10 else f"{value:.1f}"


def _nice(peak: float) -> float:
    """A round axis maximum at or above ``peak``."""
    magnitude = 10 ** max(len(str(int(peak))) - 1, 0)
    for step in (1, 2, 4, 8, 10):  # quarters of these are round
        if step * magnitude >= peak:
            return step * magnitude
    return 10 * magnitude


def _kpi(label: str, value: str, rate: str = "") -> str:
    return (f'<div class="card kpi"><div class="label">{escape(label)}</div><div class="value">{value}</div>'
            f'<div class="rate">{rate or "&nbsp;"}</div></div>')


def _states(states: Mapping[str, int]) -> str:
    chips = []
    for key, count in sorted(states.items(), key=lambda item: -item[1]):
        state, _, result = key.partition("/")
        color = RESULT_COLORS.get(result, "#607d8b") if state == "completed" else STATE_COLORS.get(state, "#90a4ae")
        label = f"{state}/{result}" if state == "completed" else state
        chips.append(f'<span class="chip" style="background:{color}">{escape(label)}<b>{_n(count)}</b></span>')
    return "".join(chips) or '<div class="empty">no job yet</div>'


def _reasons(rejected: Mapping[str, int], ignored: Mapping[str, int]) -> str:
    rows = [("rejected", reason, n) for reason, n in rejected.items()] + \
        [("ignored", reason, n) for reason, n in ignored.items()]
    if not rows:
        return '<div class="empty">nothing rejected or ignored</div>'
    rows.sort(key=lambda row: -row[2])
    peak = max(row[2] for row in rows)
    body = "".join(
        f'<tr><td><span class="badge {kind}">{kind}</span></td><td class="reason">{escape(reason)}</td>'
        f'<td style="width:22%"><div class="bar"><span style="width:{100 * n / peak:.0f}%"></span></div></td>'
        f'<td class="n">{_n(n)}</td></tr>' for kind, reason, n in rows[:12])
    return f"<table><tr><th></th><th>reason</th><th></th><th class='n'>events</th></tr>{body}</table>"


def _lag(lag: Mapping[str, Any] | None, warn: int) -> str:
    if lag is None:
        return '<div class="empty">not read yet</div>'
    if not lag.get("ok"):
        return f'<div class="reason" style="color:var(--bad)">cannot read Kafka: {escape(str(lag.get("error")))}</div>'
    rows = []
    for group in lag["groups"]:
        parts = "".join(
            f'<span class="part{" behind" if p["lag"] else ""}" title="committed {p["committed"]}, end {p["end"]}">'
            f'p{p["partition"]} <b>{_n(p["lag"])}</b></span>' for p in group["partitions"])
        width = min(100.0, 100.0 * group["lag"] / max(warn, 1))
        members = group["members"] if group["members"] is not None else "?"
        rows.append(
            f'<tr><td><b>{escape(group["label"])}</b><div class="muted" style="font-size:12px">'
            f'{escape(group["group"])} · {escape(str(group["state"] or "no group"))} · {members} member(s)</div>'
            f'<div class="parts">{parts}</div></td>'
            f'<td style="width:22%"><div class="bar"><span style="width:{width:.0f}%"></span></div></td>'
            f'<td class="n"><b>{_n(group["lag"])}</b></td></tr>')
    return (f'<table class="lag"><tr><th>consumer group (per partition)</th><th></th>'
            f'<th class="n">records behind</th></tr>{"".join(rows)}</table>')


def _recent(recent: Sequence[Mapping[str, Any]]) -> str:
    """Newest first, rejections before ignored events; one row per task and reason, with a count."""
    if not recent:
        return '<div class="empty">no rejected event in the topic</div>'
    grouped: dict[tuple[Any, ...], list[Any]] = {}
    for record in recent:
        key = (record.get("kind"), record.get("stage"), record.get("taskId"), record.get("reason"))
        grouped.setdefault(key, [record, 0])[1] += 1
    ordered = sorted(grouped.values(), key=lambda item: item[0].get("kind") != "rejected")
    rows = []
    for record, count in ordered[:15]:
        task_id = record.get("taskId")
        link = (f'<a href="/explain?taskId={quote(task_id)}" title="explain this task">{escape(task_id)}</a>'
                if task_id else '<span class="muted">unknown</span>')
        at = escape((record.get("at") or "")[11:19])
        times = f' <span class="muted">&times;{count}</span>' if count > 1 else ""
        rows.append(f'<tr><td class="muted" style="white-space:nowrap">{at}</td>'
                    f'<td><span class="badge {escape(record.get("kind", ""))}">{escape(record.get("stage", ""))}'
                    f'</span></td><td style="white-space:nowrap">{link}{times}</td>'
                    f'<td class="reason">{escape(record.get("reason", ""))}</td></tr>')
    return ("<table><tr><th>at (UTC)</th><th>stage</th><th>task</th><th>reason</th></tr>"
            + "".join(rows) + "</table>")


def _checks(checks: Sequence[Mapping[str, Any]]) -> str:
    rows = "".join(f'<tr><td style="white-space:nowrap"><span class="dot {"ok" if c["ok"] else "bad"}"></span>'
                   f'<b>{escape(c["name"])}</b></td><td class="muted">{escape(c["detail"])}</td></tr>'
                   for c in checks)
    return f"<table>{rows}</table>" if rows else '<div class="empty">no check</div>'


def pill(status: Mapping[str, Any]) -> str:
    ok = status["healthy"]
    text = "healthy" if ok else escape(status["summary"])
    return f'<span id="pill" class="pill {"ok" if ok else "bad"}">{text}</span>'


def live(status: Mapping[str, Any]) -> str:
    """The part of the page that refreshes: everything under the header."""
    counts = status["counts"]
    rates = status["throughput"][-1] if status["throughput"] else {"events": 0.0, "jobs": 0.0, "rejected": 0.0}
    queue = status.get("queueApi") or {}
    jobs_total = sum(counts["jobs"].values())
    kpis = "".join([
        _kpi("events in", _n(counts["events"]), _rate(rates["events"])),
        _kpi("jobs out", _n(jobs_total), _rate(rates["jobs"])),
        _kpi("rejected", _n(sum(counts["rejected"].values())), _rate(rates["rejected"])),
        _kpi("ignored", _n(sum(counts["ignored"].values())), "not for Treeherder"),
        _kpi("held back", _n(counts["suppressed"]), "state guard"),
        _kpi("Queue API", f'{queue.get("latency_mean", 0) * 1000:.0f}<span style="font-size:14px"> ms</span>',
             f'{_n(queue.get("requests", 0))} requests · {_n(sum((queue.get("errors") or {}).values()))} errors'),
    ])
    destinations = "".join(f'<tr><td>{escape(name)}</td><td class="n">{_n(n)}</td></tr>'
                           for name, n in sorted(counts["jobs"].items()))
    destinations = (f"<table><tr><th>destination</th><th class='n'>jobs</th></tr>{destinations}</table>"
                    if destinations else '<div class="empty">no job yet</div>')
    legend = ('<div class="legend"><span><i style="background:var(--events)"></i>events/s</span>'
              '<span><i style="background:var(--jobs)"></i>jobs/s</span>'
              '<span><i style="background:var(--rej)"></i>rejected/s</span></div>')
    return (
        f'<main id="live"><div class="kpis">{kpis}</div>'
        f'<div class="card" style="margin-bottom:16px"><h2>throughput</h2>{chart(status["throughput"])}{legend}</div>'
        f'<div class="grid"><div class="card"><h2>jobs out</h2>{destinations}'
        f'<div style="margin-top:10px">{_states(counts["states"])}</div></div>'
        f'<div class="card"><h2>rejected and ignored, by reason</h2>{_reasons(counts["rejected"], counts["ignored"])}'
        f'</div></div>'
        f'<div class="grid"><div class="card"><h2>consumer lag</h2>{_lag(status.get("lag"), status["lagWarn"])}</div>'
        f'<div class="card"><h2>health</h2>{_checks(status["checks"])}</div></div>'
        f'<div class="card" style="margin-bottom:16px"><h2>recent rejected events</h2>'
        f'{_recent(status["recentRejections"])}</div>'
        f'<div class="card"><h2>explain a task</h2><form class="explain" action="/explain" method="get">'
        f'<input name="taskId" placeholder="taskId, e.g. B3EheQ-IQ5aPzw34KS_a6g" aria-label="taskId">'
        f'<button type="submit">explain</button></form></div>'
        f'<footer>updated {time.strftime("%H:%M:%S", time.gmtime(status["at"]))} UTC · refreshes every '
        f'{REFRESH_SECONDS}s · <a href="/status.json">status.json</a> · <a href="/metrics">metrics</a></footer></main>'
    )


def page(status: Mapping[str, Any], title: str = "tc-treeherder") -> str:
    sub = f'{escape(status["process"])} · up {_ago(status["uptime"])}'
    partitions = status.get("assignedPartitions") or []
    if partitions:
        sub += f' · partitions {", ".join(str(p) for p in partitions)}'
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)} status</title>'
        f'<meta name="viewport" content="width=device-width,initial-scale=1">'
        f'<noscript><meta http-equiv="refresh" content="{REFRESH_SECONDS}"></noscript><style>{CSS}</style></head>'
        f'<body><header><h1>{escape(title)}</h1><span class="sub">{sub}</span><span class="grow"></span>'
        f'{pill(status)}</header>{live(status)}<script>{SCRIPT}</script></body></html>'
    )


def fragment(status: Mapping[str, Any]) -> str:
    """What the page's script fetches: the live part and the health pill."""
    return pill(status) + live(status)


def explain_page(explanation: Mapping[str, Any] | None, task_id: str, error: str | None = None) -> str:
    """The verdict for one task, from ``Explanation.to_json()``."""
    body: list[str] = []
    if error:
        body.append(f'<div class="card"><div class="reason" style="color:var(--bad)">{escape(error)}</div></div>')
    elif explanation is not None:
        ok = explanation["reachesTreeherder"]
        body.append(f'<div class="card" style="margin-bottom:16px"><h2>verdict</h2>'
                    f'<p><span class="pill {"ok" if ok else "bad"}">{"reaches Treeherder" if ok else "does not"}'
                    f'</span> &nbsp;{escape(explanation["summary"])}</p>')
        if explanation.get("routes") is not None:
            body.append(f'<p class="muted">routes: <span class="reason">'
                        f'{escape(", ".join(explanation["routes"]) or "(none)")}</span></p>')
        if explanation.get("hint"):
            body.append(f'<p><b>What to do:</b> {escape(explanation["hint"])}</p>')
        body.append("</div><div class='card'><h2>events</h2><table><tr><th>event</th><th>outcome</th>"
                    "<th>detail</th></tr>")
        for event in explanation["events"]:
            if event["outcome"] == "jobs":

                detail = "".join(
                    f'<details><summary>{escape(job["job"].get("state", ""))}/'
                    f'{escape(job["job"].get("result", "unknown"))} → {escape(job["routingKey"])}</summary>'
                    f'<pre>{escape(orjson.dumps(job["job"], option=orjson.OPT_INDENT_2).decode())}</pre></details>'
                    for job in event["jobs"])
                badge = '<span class="badge" style="background:#e8f5e9;color:var(--ok)">job</span>'
            else:
                detail = f'<span class="reason">[{escape(event["stage"] or "")}] {escape(event["reason"] or "")}</span>'
                badge = f'<span class="badge {escape(event["outcome"])}">{escape(event["outcome"])}</span>'
            body.append(f'<tr><td style="white-space:nowrap">{escape(event["event"])}</td><td>{badge}</td>'
                        f'<td>{detail}</td></tr>')
        body.append("</table></div>")
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>explain {escape(task_id)}</title>'
        f'<meta name="viewport" content="width=device-width,initial-scale=1"><style>{CSS}</style></head><body>'
        f'<header><h1>explain {escape(task_id)}</h1><span class="grow"></span><a href="/status" '
        f'style="color:#9fb0c0">← status</a></header><main>{"".join(body)}</main></body></html>'
    )
