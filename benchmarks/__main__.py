"""`python -m benchmarks [--quick] [--only NAME] [--json FILE] [--readme]`: run, print the table.

`--readme` rewrites the performance table in README.md between the markers
`<!-- bench:start -->` and `<!-- bench:end -->`; with `--only`, it replaces only those rows
there (a slow benchmark run in full mode can be merged into a `--quick` table).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import pkgutil
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.common import ROOT, Options, Result, write_json


def discover() -> list[str]:
    pkg = Path(__file__).parent
    return sorted(m.name for m in pkgutil.iter_modules([str(pkg)]) if m.name.startswith("bench_"))


def table(results: list[Result]) -> str:
    lines = [
        "| benchmark | ours (p50) | baseline (p50) | ratio | target | ok |",
        "|---|---:|---:|---:|---|:-:|",
    ]
    for r in results:
        base = f"{r.baseline_ms:.1f} ms ({r.baseline})" if r.baseline_ms is not None else "—"
        ratio = f"{r.ratio:.2f}×" if r.ratio is not None else "—"
        ok = {True: "✅", False: "❌", None: ""}[r.ok]
        lines.append(f"| {r.name} | {r.ours_ms:.1f} {r.unit} | {base} | {ratio} | {r.target} | {ok} |")
    return "\n".join(lines)


START, END = "<!-- bench:start -->", "<!-- bench:end -->"


def header(quick: bool, only: list[str] | None) -> str:
    stamp = datetime.now(UTC).strftime("%Y-%m-%d")
    cpu = f"{platform.machine()}, {platform.python_implementation()} {platform.python_version()}"
    text = f"Measured {stamp} on {cpu} ({os.cpu_count()} cores), medians of interleaved runs."
    if quick:
        text += (
            "\n`--quick`: fewer iterations and smaller loads than a full run (e.g. 8 load clients x 10 calls,"
            " 3 edits and 3 mutations per project)."
        )
    if only:
        text += f"\nRows of {', '.join(only)}: measured in a separate full run (`--only`), merged into this table."
    return text


def merge_rows(old: str, new: str) -> str:
    """`old`'s table with the rows named in `new` replaced in place (new names appended)."""
    fresh = {line.split(" | ", 1)[0]: line for line in new.splitlines()[2:]}
    lines = []
    for line in old.splitlines():
        name = line.split(" | ", 1)[0]
        lines.append(fresh.pop(name, line) if line.startswith("| ") else line)
    return "\n".join(lines + list(fresh.values()))


def update_readme(results: list[Result], quick: bool, only: list[str] | None) -> None:
    """Write the table between the markers; with `only`, replace just those rows of the table there."""
    readme = ROOT / "README.md"
    content = readme.read_text()
    if START not in content or END not in content:
        print("README.md has no benchmark markers; not updated", file=sys.stderr)
        return
    head, _, rest = content.partition(START)
    current, _, tail = rest.partition(END)
    out = table(results)
    if only and "| benchmark |" in current:
        intro, _, old_table = current.strip().partition("\n\n")
        line = header(quick, only).splitlines()[-1]
        if line not in intro.splitlines():  # once: a second merged run of the same rows says nothing new
            intro = f"{intro}\n{line}"
        text = f"{intro}\n\n{merge_rows(old_table, out)}"
    else:
        text = f"{header(quick, None)}\n\n{out}"
    readme.write_text(f"{head}{START}\n{text}\n{END}{tail}")


async def main_async(args: argparse.Namespace) -> int:
    opts = Options(quick=args.quick)
    opts.workdir.mkdir(parents=True, exist_ok=True)
    results: list[Result] = []
    for name in discover():
        if args.only and not any(o in name for o in args.only):
            continue
        module = importlib.import_module(f"benchmarks.{name}")
        print(f"running {name} ...", file=sys.stderr, flush=True)
        results.extend(await module.run(opts))
    out = table(results)
    print(out)
    if args.json:
        write_json(Path(args.json), results)
    if args.readme:
        update_readme(results, args.quick, args.only)
    return 0 if all(r.ok is not False for r in results) else 1


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--quick", action="store_true", help="fewer iterations")
    parser.add_argument("--only", action="append", help="run benchmarks whose name contains this (repeatable)")
    parser.add_argument("--json", help="also write the results as JSON to this file")
    parser.add_argument("--readme", action="store_true", help="write the table into README.md")
    return asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    raise SystemExit(main())
