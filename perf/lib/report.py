#!/usr/bin/python3
"""Turns a scenario's measurements (OUT/<sc>.jsonl, written by perf/lib/common.sh)
into OUT/<sc>.json (every run, medians, machine, command), OUT/<sc>.md (a
Markdown table) and PNG plots drawn by gnuplot (OUT/<sc>.png, and
OUT/<sc>-latency.png when the runs carry latency histograms).

    report.py OUT SCENARIO

Medians, not means: a shared 2-core machine has outliers; min and max are
kept beside each median so the spread is visible."""
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys


def machine():
    info = {"cpus": os.cpu_count(), "kernel": platform.release(),
            "loadavg_at_report": os.getloadavg()[0]}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as f:
            info["mem_gb"] = round(int(f.readline().split()[1]) / 1048576, 1)
        with open("/etc/debian_version") as f:
            info["debian"] = f.read().strip()
    except OSError:
        pass
    try:
        info["postfix"] = subprocess.run(["postconf", "-d", "-h", "mail_version"],
                                         capture_output=True, text=True).stdout.strip()
    except OSError:
        pass
    return info


def load(out, sc):
    meta, systems, order = {}, {}, []
    with open(os.path.join(out, sc + ".jsonl")) as f:
        for line in f:
            rec = json.loads(line)
            if "meta" in rec:
                meta.update(rec["meta"])
                continue
            name = rec["system"]
            if name not in systems:
                systems[name] = {"status": "ok", "cases": {}}
                order.append(name)
            s = systems[name]
            if "status" in rec:
                s["status"] = rec["status"]
                continue
            case = s["cases"].setdefault(rec["case"], {"runs": []})
            if "skipped" in rec:
                case["skipped"] = rec["skipped"]
                continue
            run = dict(rec["metrics"])
            run["run"] = rec["run"]
            if "raw" in rec:
                run["raw"] = rec["raw"]
            case["runs"].append(run)
    for s in systems.values():
        for case in s["cases"].values():
            keys = sorted({k for r in case["runs"] for k in r if k not in ("run", "raw")})
            case["median"], case["min"], case["max"] = {}, {}, {}
            if not case["runs"]:
                case.setdefault("skipped", "no successful run")
            for k in keys:
                vals = [r[k] for r in case["runs"] if k in r]
                case["median"][k] = statistics.median(vals)
                case["min"][k] = min(vals)
                case["max"][k] = max(vals)
    # Ratios of medians against one system, case by case (meta ratio_to):
    # "how many times Postfix" is the comparison the issue asks for.
    ref = systems.get(meta.get("ratio_to", ""), {}).get("cases", {})
    metric = meta.get("metric", "")
    for s in systems.values():
        for cname, case in s["cases"].items():
            base = ref.get(cname, {}).get("median", {}).get(metric)
            mine = case["median"].get(metric)
            if base and mine is not None:
                case["ratio"] = mine / base
    return meta, systems, order


def fmt(v):
    if v is None:
        return "–"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def columns(meta):
    cols = []
    for item in meta.get("columns", "").split(","):
        if ":" in item:
            k, label = item.split(":", 1)
            cols.append((k, label))
    return cols


def markdown(sc, meta, systems, order, mach):
    metric = meta.get("metric", "")
    unit = meta.get("unit", "")
    lines = [f"### {sc}: {meta.get('title', '')}".rstrip(": "), ""]
    lines.append(f"Run {meta.get('started', '?')} on {mach.get('cpus')} vCPU "
                 f"({mach.get('cpu', '?')}), {mach.get('mem_gb', '?')} GB, kernel "
                 f"{mach.get('kernel')}, Debian {mach.get('debian', '?')}; "
                 f"Postfix {mach.get('postfix', '?')}; load average "
                 f"{meta.get('loadavg_start', '?')} at start, "
                 f"{mach.get('loadavg_at_report', 0):.1f} at end (shared machine).  ")
    lines.append(f"Command: `{meta.get('command', '')}`  ")
    if meta.get("load"):
        lines.append(f"Load: `{meta['load']}`  ")
    lines.append(f"Each value is the median of {meta.get('runs', '?')} runs (min–max in brackets).")
    lines.append("")
    cols = columns(meta)
    ratio = meta.get("ratio_to")
    rcol = [f"× {ratio}"] if ratio else []
    head = ["System", "Case", f"{metric} ({unit})"] + rcol + [label for _, label in cols] + ["runs"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "|".join(["---"] * len(head)) + "|")
    for name in order:
        s = systems[name]
        if s["status"] != "ok" and not s["cases"]:
            lines.append(f"| {name} | – | {s['status']} |" + " |" * (len(cols) + len(rcol) + 1))
            continue
        for cname, case in s["cases"].items():
            if not case["runs"]:
                lines.append(f"| {name} | {cname} | {case['skipped']} |" + " |" * (len(cols) + len(rcol) + 1))
                continue
            med, lo, hi = case["median"], case["min"], case["max"]
            cell = (f"**{fmt(med.get(metric))}** [{fmt(lo.get(metric))}–{fmt(hi.get(metric))}]"
                    if metric in med else "–")
            rcell = ([f"{case['ratio']:.2f}" if "ratio" in case else "–"] if ratio else [])
            row = ([name, cname, cell] + rcell + [fmt(med.get(k)) for k, _ in cols]
                   + [str(len(case["runs"]))])
            lines.append("| " + " | ".join(row) + " |")
    if meta.get("note"):
        lines += ["", meta["note"]]
    return "\n".join(lines) + "\n"


def gnuplot(script):
    if not shutil.which("gnuplot"):
        return False
    r = subprocess.run(["gnuplot"], input=script, text=True, capture_output=True)
    if r.returncode != 0:
        sys.stderr.write("report.py: gnuplot failed: " + r.stderr)
        return False
    return True


def bar_plot(out, sc, meta, systems, order):
    metric = meta.get("metric")
    cases = []
    for name in order:
        for c, case in systems[name]["cases"].items():
            if c not in cases and metric in case.get("median", {}):
                cases.append(c)
    measured = [n for n in order
                if any(metric in c.get("median", {}) for c in systems[n]["cases"].values())]
    if not metric or not cases or not measured:
        return None
    # Explicit bar positions: case i at x=i, systems side by side around it
    # (gnuplot's histogram style misplaces error bars with one series).
    width = 0.8 / len(measured)
    dats = []
    for k, n in enumerate(measured):
        dat = os.path.join(out, f"{sc}-{k}.dat")
        with open(dat, "w") as f:
            for i, c in enumerate(cases):
                case = systems[n]["cases"].get(c)
                if case and metric in case["median"]:
                    x = i + (k - (len(measured) - 1) / 2) * width
                    f.write(f"{x} {case['median'][metric]} {case['min'][metric]} "
                            f"{case['max'][metric]}\n")
        dats.append((n, dat))
    missing = [n for n in order if n not in measured]
    title = f"{sc}: {meta.get('title', '')}"
    if missing:
        title += "\\n(no data: " + ", ".join(missing) + ")"
    png = os.path.join(out, f"{sc}.png")
    # Systems an order of magnitude apart: a log axis keeps every bar visible.
    meds = [systems[n]["cases"][c]["median"][metric] for n in measured
            for c in cases if metric in systems[n]["cases"].get(c, {}).get("median", {})]
    logy = min(meds) > 0 and max(meds) / min(meds) > 20
    yaxis = "set logscale y\nset yrange [1:*]" if logy else "set yrange [0:*]"
    xtics = ", ".join(f'"{c}" {i}' for i, c in enumerate(cases))
    plots = []
    for k, (n, dat) in enumerate(dats):
        plots.append(f"'{dat}' using 1:2 with boxes lc {k + 1} title '{n}'")
        plots.append(f"'{dat}' using 1:2:3:4 with yerrorbars lc black pt 0 notitle")
    script = f"""
set terminal pngcairo size 640,400 font ',9' noenhanced
set output '{png}'
set title "{title}"
set ylabel "{metric} ({meta.get('unit', '')}), median, bars min-max{', log scale' if logy else ''}"
set boxwidth {width * 0.9}
set style fill solid 0.6 border -1
set xtics ({xtics}) rotate by -20
set xrange [-0.6:{len(cases) - 0.4}]
{yaxis}
set key top right
set grid ytics
plot {', '.join(plots)}
"""
    return png if gnuplot(script) else None


def latency_plot(out, sc, meta, systems, order):
    which = meta.get("latency")
    if not which:
        return None
    series = []
    for name in order:
        for cname, case in systems[name]["cases"].items():
            runs = [r for r in case["runs"] if "raw" in r]
            if not runs:
                continue
            # The run whose main metric is the median one, for a typical curve.
            metric = meta.get("metric")
            runs.sort(key=lambda r: r.get(metric, 0))
            raw = os.path.join(out, runs[len(runs) // 2]["raw"])
            try:
                with open(raw) as f:
                    h = json.load(f)["latency_us"][which]
            except (OSError, KeyError, ValueError):
                continue
            if not h["count"]:
                continue
            dat = os.path.join(out, f"{sc}-{name}-{cname.replace(' ', '_')}-{which}.dat")
            total, seen = h["count"], 0
            with open(dat, "w") as f:
                for upper, n in h["buckets"]:
                    seen += n
                    f.write(f"{max(upper, 1) / 1000.0} {seen / total}\n")
            series.append((f"{name}, {cname}", dat))
    if not series:
        return None
    png = os.path.join(out, f"{sc}-latency.png")
    plots = ", ".join(f"'{d}' using 1:2 with steps lw 2 title '{t}'" for t, d in series)
    label = {"eod_250": "end of data -> 250", "connect_220": "connect -> 220"}.get(which, which)
    script = f"""
set terminal pngcairo size 640,400 font ',9' noenhanced
set output '{png}'
set title "{sc}: latency CDF, {label} (median run)"
set xlabel "ms"
set ylabel "fraction of replies"
set logscale x
set yrange [0:1.02]
set key bottom right
set grid
plot {plots}
"""
    return png if gnuplot(script) else None


def main():
    out, sc = sys.argv[1], sys.argv[2]
    meta, systems, order = load(out, sc)
    mach = machine()
    for stale in (f"{sc}.png", f"{sc}-latency.png"):
        if os.path.exists(os.path.join(out, stale)):
            os.unlink(os.path.join(out, stale))
    pngs = [p for p in (bar_plot(out, sc, meta, systems, order),
                        latency_plot(out, sc, meta, systems, order)) if p]
    doc = {"scenario": sc, "meta": meta, "machine": mach, "systems": systems,
           "order": order, "plots": [os.path.basename(p) for p in pngs]}
    with open(os.path.join(out, sc + ".json"), "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    md = markdown(sc, meta, systems, order, mach)
    for p in pngs:
        md += f"\n![{os.path.basename(p)}]({os.path.basename(p)})\n"
    with open(os.path.join(out, sc + ".md"), "w") as f:
        f.write(md)
    sys.stdout.write(md)


if __name__ == "__main__":
    main()
