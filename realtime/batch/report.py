"""The batch report (report.md / report.html and plots/): what a study's recordings gave.

Counts per subject (and session), per class and kind, event durations, the recordings that
failed with their errors, and the run's throughput and peak memory. Built by
``realtime.batch.tables.write_outputs`` from totals gathered while the combined tables stream by,
so it costs no second pass over the events.
"""
from __future__ import annotations

import html
from pathlib import Path

import matplotlib

matplotlib.use("Agg")            # plots are files; never a window
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)

MAX_BARS = 40     # subjects / classes drawn in a plot (the tables list all)


def _blocks(run, tot, summary: dict, plots: dict[str, str]) -> list[tuple]:
    r, t, m = summary["recordings"], summary["this_run"], summary["memory_mb"]
    st = summary["settings"]
    b: list[tuple] = [("h1", f"Batch report: {run.out.name}"),
                      ("p", f"{summary['finished_at']}; engine {st['engine']}, tracker {st['tracker']}, "
                            f"micro/macro rule {st['me_rule']}, "
                            + ("causal (no look-ahead)" if st["causal"] else "recordings read ahead")
                            + (f"; command: `{summary['command']}`" if summary.get("command") else ""))]
    hours = sum(c["seconds"] for c in tot.subjects.values()) / 3600.0
    micro = sum(c["micro"] for c in tot.subjects.values())
    macro = sum(c["macro"] for c in tot.subjects.values())
    ex = summary.get("executor") or {}
    how = (ex.get("kind", "-") + (f" x{ex['workers']}" if ex.get("workers") else "")
           + (f", {ex.get('cpus')} CPUs on {ex.get('nodes')} node(s) ({ex.get('address')})" if ex.get("kind") == "ray"
              else ""))
    b += [("h2", "Recordings"),
          ("table", ["", "value"], [
              ["recordings", r["total"]], ["done", r["done"]], ["failed", r["failed"]], ["pending", r["pending"]],
              ["hours of video (done)", f"{hours:.3f}"], ["events", f"{tot.events} ({micro} micro, {macro} macro)"],
              ["analysed in this run", r["analysed_this_run"]], ["skipped (finished, unchanged)", r["skipped_unchanged"]],
              ["this run: wall time", f"{t['wall_s']} s on {how}" if r["analysed_this_run"] else "-"],
              ["this run: recordings / min", t["recordings_per_min"] or "-"],
              ["this run: frames / s", t["frames_per_s"] or "-"],
              ["peak memory: parent", f"{m['parent_peak_rss']} MB"],
              ["peak memory: workers", "-" if m["worker_peak_rss_max"] is None else
               f"up to {m['worker_peak_rss_max']} MB over {len(m['worker_peak_rss'])} worker process(es)"]])]
    if summary["failed"]:
        b += [("h2", f"Failed recordings ({len(summary['failed'])})"),
              ("table", ["recording", "error"], [[f["recording"], f["error"]] for f in summary["failed"]])]
    if tot.no_face:
        b += [("p", f"No face was found in any frame of {len(tot.no_face)} done recording(s): "
                    + ", ".join(tot.no_face[:20]) + (" ..." if len(tot.no_face) > 20 else ""))]
    rows = []
    for subj, c in sorted(tot.subjects.items()):
        minutes = c["seconds"] / 60.0
        rows.append([subj, c["recordings"], f"{minutes:.2f}", c["micro"], c["macro"], c["micro"] + c["macro"],
                     f"{(c['micro'] + c['macro']) / minutes:.2f}" if minutes > 0 else "-"])
    b += [("h2", "Events per subject"),
          ("table", ["subject", "recordings", "minutes", "micro", "macro", "events", "events / min"], rows)]
    if "per_subject" in plots:
        b.append(("img", plots["per_subject"], "events per subject and kind"))
    if tot.sessions:
        b += [("h3", "Per session"),
              ("table", ["subject", "session", "recordings", "minutes", "micro", "macro"],
               [[s, ses, c["recordings"], f"{c['seconds'] / 60:.2f}", c["micro"], c["macro"]]
                for (s, ses), c in sorted(tot.sessions.items())])]
    b += [("h2", "Events per class and kind"),
          ("table", ["class", "micro", "macro", "events"],
           [[k, c["micro"], c["macro"], c["micro"] + c["macro"]] for k, c in sorted(tot.classes.items())]
           or [["(no events)", 0, 0, 0]])]
    if "per_class" in plots:
        b.append(("img", plots["per_class"], "events per class and kind"))
    if "durations" in plots:
        b += [("h2", "Event durations"), ("img", plots["durations"], "onset to offset, ms")]
    b += [("h2", "Files"),
          ("ul", ["`events.csv` / `events.parquet`: one row per event (recording, subject, session, face, kind, "
                  "label, confidence, onset / apex / offset frames and seconds, duration, latencies)",
                  "`recordings.csv` / `recordings.parquet`: one row per recording (status, error, frames, events, "
                  "faults, wall time, worker and its peak memory)",
                  "`manifest.csv`: done / failed / pending per recording (also a valid input manifest)",
                  "`recordings/<id>/`: each recording's event log, per-frame signal and result.json",
                  "`exports/`: ELAN `.eaf` per recording, the MEGC 2022 spotting CSV, the interval CSV"])]
    return b


def _md(blocks) -> str:
    out = []
    for kind, *a in blocks:
        if kind in ("h1", "h2", "h3"):
            out.append("#" * int(kind[1]) + " " + a[0])
        elif kind == "p":
            out.append(a[0])
        elif kind == "ul":
            out.append("\n".join(f"- {x}" for x in a[0]))
        elif kind == "img":
            out.append(f"![{a[1]}]({a[0]})")
        elif kind == "table":
            head, rows = a
            cell = lambda v: str(v).replace("|", "\\|").replace("\n", " ")  # noqa: E731
            out.append("\n".join(["| " + " | ".join(cell(h) for h in head) + " |",
                                  "| " + " | ".join("---" for _ in head) + " |"]
                                 + ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]))
    return "\n\n".join(out) + "\n"


def _inline(text: str) -> str:
    parts = str(text).split("`")
    return "".join(f"<code>{html.escape(p)}</code>" if i % 2 else html.escape(p) for i, p in enumerate(parts))


def _html(blocks, title: str) -> str:
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
           "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}table{border-collapse:collapse}"
           "td,th{border:1px solid #ccc;padding:2px 8px;text-align:left}img{max-width:100%}</style></head><body>"]
    for kind, *a in blocks:
        if kind in ("h1", "h2", "h3"):
            out.append(f"<{kind}>{html.escape(a[0])}</{kind}>")
        elif kind == "p":
            out.append(f"<p>{_inline(a[0])}</p>")
        elif kind == "ul":
            out.append("<ul>" + "".join(f"<li>{_inline(x)}</li>" for x in a[0]) + "</ul>")
        elif kind == "img":
            out.append(f"<img src='{html.escape(a[0])}' alt='{html.escape(a[1])}'>")
        elif kind == "table":
            head, rows = a
            out.append("<table><tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in head) + "</tr>"
                       + "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in r) + "</tr>"
                                 for r in rows) + "</table>")
    out.append("</body></html>")
    return "\n".join(out)


def _plots(out: Path, tot) -> dict[str, str]:
    folder = out / "plots"
    folder.mkdir(exist_ok=True)
    made = {}

    def bars(name, items, xlabel):
        items = items[:MAX_BARS]
        if not items:
            return
        fig, ax = plt.subplots(figsize=(max(4.0, 0.35 * len(items) + 2), 3.2))
        xs = range(len(items))
        mi = [c["micro"] for _, c in items]
        ma = [c["macro"] for _, c in items]
        ax.bar(xs, mi, label="micro", color="#d62728")
        ax.bar(xs, ma, bottom=mi, label="macro", color="#1f77b4")
        ax.set_xticks(list(xs), [k for k, _ in items], rotation=60 if len(items) > 8 else 0, ha="right"
                      if len(items) > 8 else "center", fontsize=8)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("events")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(folder / f"{name}.png", dpi=100)
        plt.close(fig)
        made[name] = f"plots/{name}.png"

    bars("per_subject", sorted(tot.subjects.items(), key=lambda kv: -(kv[1]["micro"] + kv[1]["macro"])),
         "subject" + (f" (the {MAX_BARS} with most events)" if len(tot.subjects) > MAX_BARS else ""))
    bars("per_class", sorted(tot.classes.items()), "class")
    if tot.durations["micro"] or tot.durations["macro"]:
        fig, ax = plt.subplots(figsize=(6, 3.2))
        top = max(tot.durations["micro"] + tot.durations["macro"])
        bins = [i * max(20.0, top / 30) for i in range(32)]
        for kind, color in (("micro", "#d62728"), ("macro", "#1f77b4")):
            if tot.durations[kind]:
                ax.hist(tot.durations[kind], bins=bins, alpha=0.7, label=kind, color=color)
        ax.axvline(500, color="k", lw=0.8, ls="--")
        ax.set_xlabel("onset -> offset (ms); dashed: 500 ms")
        ax.set_ylabel("events")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(folder / "durations.png", dpi=100)
        plt.close(fig)
        made["durations"] = "plots/durations.png"
    return made


def write_report(run, tot, summary: dict, fmt: str = "both") -> dict[str, Path]:
    """report.md and/or report.html (``fmt`` md | html | both) with plots/; returns the paths."""
    plots = _plots(run.out, tot)
    blocks = _blocks(run, tot, summary, plots)
    paths = {}
    if fmt in ("md", "both"):
        p = run.out / "report.md"
        p.write_text(_md(blocks), encoding="utf-8")
        paths["report.md"] = p
    if fmt in ("html", "both"):
        p = run.out / "report.html"
        p.write_text(_html(blocks, f"Batch report: {run.out.name}"), encoding="utf-8")
        paths["report.html"] = p
    if plots:
        paths["plots"] = run.out / "plots"
    return paths
