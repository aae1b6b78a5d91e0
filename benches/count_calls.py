#!/usr/bin/env python3
"""Counts the calls a callgrind profile records to functions whose name contains a pattern.

    python3 benches/count_calls.py callgrind.out.123 mallctl
"""
import re
import sys
from collections import Counter

path, pattern = sys.argv[1], sys.argv[2]
names = {}
calls = Counter()
callee = None
for line in open(path, encoding="utf-8", errors="replace"):
    m = re.match(r"^c?fn=\((\d+)\)(?: (.*))?$", line.rstrip("\n"))
    if m:
        if m.group(2):
            names[m.group(1)] = m.group(2)
        callee = m.group(1) if line.startswith("cfn=") else None
        continue
    if callee and line.startswith("calls="):
        calls[callee] += int(line.split()[0].split("=")[1])
        callee = None
total = 0
for fid, n in sorted(calls.items(), key=lambda kv: -kv[1]):
    name = names.get(fid, "?")
    if pattern in name:
        print(f"{n:>10}  {name}")
        total += n
print(f"{total:>10}  total calls to *{pattern}*")
