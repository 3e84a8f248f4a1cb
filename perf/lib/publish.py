#!/usr/bin/python3
"""Publishes one results directory: copies each scenario's JSON, Markdown and
plots to docs/perf/<date>/ and puts the tables into the "Performance" section
of perf/README.md (between the perf:begin/perf:end markers) and the
validation table into its smtp-source section (validate:begin/validate:end),
so every number quoted there comes from a results file in the tree.

    perf/lib/publish.py results/<date>
"""
import os
import re
import shutil
import sys

ORDER = ["accept", "sessions", "drain", "idle", "cpu", "shield", "profile", "validate"]


def main():
    src = os.path.abspath(sys.argv[1])
    top = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    date = os.path.basename(src.rstrip("/"))
    dst = os.path.join(top, "docs", "perf", date)
    os.makedirs(dst, exist_ok=True)
    tables = {}
    for sc in ORDER:
        md = os.path.join(src, sc + ".md")
        if not os.path.exists(md):
            continue
        for name in os.listdir(src):
            if name.startswith(sc) and name.endswith((".json", ".md", ".png")) \
                    and not name.endswith(".jsonl") and re.match(rf"{sc}(-latency)?\.", name) \
                    or re.match(rf"{sc}-[a-z-]+\.txt$", name):
                shutil.copy(os.path.join(src, name), os.path.join(dst, name))
        text = open(md).read()
        # Image links relative to perf/README.md.
        text = re.sub(r"!\[([^]]*)\]\(([^)/]+\.png)\)",
                      lambda m: f"![{m.group(1)}](../docs/perf/{date}/{m.group(2)})", text)
        tables[sc] = text.replace("### ", "#### ", 1)
    readme = os.path.join(top, "perf", "README.md")
    doc = open(readme).read()
    perf = "\n".join(tables[sc] for sc in ORDER if sc in tables and sc != "validate")
    perf = (f"Results of {date}, copied with their JSON to `docs/perf/{date}/`.\n\n" + perf)
    doc = re.sub(r"<!-- perf:begin -->.*<!-- perf:end -->",
                 lambda m: "<!-- perf:begin -->\n" + perf + "<!-- perf:end -->", doc, flags=re.S)
    if "validate" in tables:
        doc = re.sub(r"<!-- validate:begin -->.*<!-- validate:end -->",
                     lambda m: "<!-- validate:begin -->\n" + tables["validate"] + "<!-- validate:end -->",
                     doc, flags=re.S)
    open(readme, "w").write(doc)
    print(f"published {', '.join(t for t in ORDER if t in tables)} to {dst}")


if __name__ == "__main__":
    main()
