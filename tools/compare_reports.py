"""Compare two reports' sections and non-timing figures: what a change of code must leave as it
was (AP, legacy AP, agreement, layer drift, the tuning history, what each model is), while
latency, throughput and costs may move. Prints each difference; exits 1 if there is one.

    .venv/bin/python -m tools.compare_reports OLD/summary.md NEW/summary.md
"""

import argparse
import re
import sys
from pathlib import Path

from detbench.common import run_main

# Rows and columns that time something: they move from run to run.
TIMING = re.compile(r"Latency|Throughput|Speed-up|GFLOP|matmul|Op time|Wall time|Peak memory|ms per image|p50|p90|p99")
# Sections that are timings throughout: only their presence is compared.
TIMING_SECTIONS = {"Where the time goes", "Throughput by instances", "Cost per stage"}


def sections(text):
    """{heading: [lines]} of a summary.md; the part before the first heading is "matrix"."""
    found, heading = {"matrix": []}, "matrix"
    for line in text.splitlines():
        if line.startswith("## "):
            heading = line[3:]
            found[heading] = []
        else:
            found[heading].append(line)
    return found


def table_cells(lines):
    """A section's table as rows of cells, without the columns whose header times something."""
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines if line.startswith("|")]
    rows = [row for row in rows if not set("".join(row)) <= set("-")]
    if not rows:
        return []
    kept = [index for index, name in enumerate(rows[0]) if not TIMING.search(name)]
    return [[row[index] for index in kept if index < len(row)] for row in rows if not TIMING.search(row[0])]


def facts(text):
    """What must not change: each section's heading and its non-timing table cells, and the
    lines saying on what each model was scored and how it was quantized."""
    found = {}
    for heading, lines in sections(text).items():
        found[heading] = [] if heading in TIMING_SECTIONS else table_cells(lines)
        found[heading] += [
            line
            for line in lines
            if line.startswith("- ") and re.search(r"accuracy on|quantized here", line) and not TIMING.search(line)
        ]
    return found


def differences(old_text, new_text):
    old, new = facts(old_text), facts(new_text)
    lines = [f"section {heading!r} only in the old report" for heading in old if heading not in new]
    lines += [f"section {heading!r} only in the new report" for heading in new if heading not in old]
    for heading in (heading for heading in old if heading in new):
        for before, after in zip(old[heading], new[heading]):
            if before != after:
                lines.append(f"{heading}: {before} -> {after}")
        if len(old[heading]) != len(new[heading]):
            lines.append(f"{heading}: {len(old[heading])} rows -> {len(new[heading])}")
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", type=Path, help="a summary.md")
    parser.add_argument("new", type=Path, help="the summary.md to compare with it")
    args = parser.parse_args()
    found = differences(args.old.read_text(), args.new.read_text())
    print("\n".join(found) or f"same sections and non-timing figures: {args.old} and {args.new}")
    sys.exit(1 if found else 0)


if __name__ == "__main__":
    run_main(main)
