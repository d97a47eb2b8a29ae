"""`python -m benchmarks [--quick] [--only NAME] [--json FILE] [--readme]`: run, print the table.

`--readme` rewrites the performance table in README.md between the markers
`<!-- bench:start -->` and `<!-- bench:end -->`.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
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


def update_readme(text: str) -> None:
    readme = ROOT / "README.md"
    content = readme.read_text()
    start, end = "<!-- bench:start -->", "<!-- bench:end -->"
    if start not in content or end not in content:
        print("README.md has no benchmark markers; not updated", file=sys.stderr)
        return
    head, _, rest = content.partition(start)
    _, _, tail = rest.partition(end)
    readme.write_text(f"{head}{start}\n{text}\n{end}{tail}")


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
        stamp = datetime.now(UTC).strftime("%Y-%m-%d")
        cpu = f"{platform.machine()}, {platform.python_implementation()} {platform.python_version()}"
        update_readme(f"Measured {stamp} on {cpu} (2 cores), medians of interleaved runs.\n\n{out}")
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
