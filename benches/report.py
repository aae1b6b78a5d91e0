#!/usr/bin/env python3
"""Prints the criterion medians of `cargo bench --bench admission` (and `--bench sampler`)
as Markdown tables with the ratios the README quotes. Reads target/criterion/*/*/new/."""
import json
import pathlib
import sys

root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "target/criterion")


def median_ns(group, bench):
    path = root / group / bench / "new" / "estimates.json"
    if not path.exists():
        return None
    return json.loads(path.read_text())["median"]["point_estimate"]


def fmt(ns):
    return f"{ns / 1000:.2f} µs" if ns >= 1000 else f"{ns:.0f} ns"


VARIANTS = [
    "bare service_fn",
    "ConcurrencyLimit",
    "GlobalConcurrencyLimit",
    "LoadShed+ConcurrencyLimit",
    "admission (memory off)",
    "admission (jemalloc)",
]


def call_table(group, title):
    bare = median_ns(group, "bare service_fn")
    limit = median_ns(group, "ConcurrencyLimit")
    if bare is None or limit is None:
        return
    base = limit - bare
    print(f"\n**{title}** (per call; overhead = median − bare service_fn)\n")
    print("| variant | median | overhead | overhead ÷ ConcurrencyLimit's |")
    print("|---|---:|---:|---:|")
    for variant in VARIANTS:
        ns = median_ns(group, variant)
        if ns is None:
            continue
        over = ns - bare
        ratio = f"{over / base:.2f}×" if base > 0 and variant != "bare service_fn" else "–"
        print(f"| {variant} | {fmt(ns)} | {fmt(over) if variant != 'bare service_fn' else '–'} | {ratio} |")


def path_table(group, title, reference):
    ref = median_ns(group, reference)
    rows = [d.name for d in sorted((root / group).glob("*")) if (d / "new").exists()]
    if ref is None or not rows:
        return
    print(f"\n**{title}**\n")
    print(f"| variant | median | ÷ {reference} |")
    print("|---|---:|---:|")
    for bench in rows:
        ns = median_ns(group, bench)
        print(f"| {bench} | {fmt(ns)} | {ns / ref:.2f}× |")


call_table("uncontended", "(a) uncontended, current-thread runtime")
call_table("contended_2 callers", "(b) contended, 2-worker runtime, 2 callers")
call_table("contended_16 callers", "(b) contended, 2-worker runtime, 16 callers")
path_table("queue path", "(c) queue path: wait for the only slot, woken by a release", "ConcurrencyLimit")
path_table("rejection path", "(d) rejection path: queue full → 503 response", "LoadShed+ConcurrencyLimit")
if (root / "sampler refresh").exists():
    print("\n**sampler refresh** (precise: epoch advance + stats.allocated + tcache_bytes; "
          "refresh: what the sampler pays per tick on average)\n")
    print("| threads having allocated | precise | refresh |")
    print("|---:|---:|---:|")
    for n in ("1", "8", "64"):
        precise = median_ns("sampler refresh/precise", n)
        refresh = median_ns("sampler refresh/refresh", n)
        if precise is not None and refresh is not None:
            print(f"| {n} | {fmt(precise)} | {fmt(refresh)} |")
