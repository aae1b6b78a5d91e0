#!/usr/bin/env python3
"""Import cycles between the library's modules: exits 1 and names them if any.

Each file of src/ is a module; an arrow goes from a module to every module its `crate::`,
`super::` and (in a folder's mod.rs) child paths name, in `use` lines and in code. Arrows to
the crate root are not counted: lib.rs only re-exports. Arrows from a file to its folder's
mod.rs are: a file either defines a part its folder's mod.rs may name, or adds to the types
mod.rs defines, never both. Tests kept at the end of a file may use anything. Any circle is
reported.

    python3 .ci/import-cycles.py [src]
"""
import re
import sys
from pathlib import Path

src = Path(sys.argv[1] if len(sys.argv) > 1 else "src")


def module_of(path):
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] in ("mod", "lib"):
        parts.pop()
    return tuple(parts)


modules = {module_of(p): p for p in src.rglob("*.rs")}


def strip_comments(text):
    # Tests kept at the end of a file (`#[cfg(test)] mod tests {`) may use anything.
    text = re.split(r"#\[cfg\(test\)\]\s*(?:pub\S* )?mod \w+ \{", text)[0]
    text = re.sub(r"//[^\n]*", "", text)
    return re.sub(r"/\*.*?\*/", "", text, flags=re.S)


def expand(tree):
    """`a::{b, c::{d, e}}` -> ["a::b", "a::c::d", "a::c::e"]."""
    tree = tree.strip()
    depth, start = 0, None
    for i, ch in enumerate(tree):
        if ch == "{":
            if depth == 0:
                start = i
            depth += 1
        elif ch == "}":
            depth -= 1
    if start is None:
        return [tree]
    prefix, inner = tree[:start], tree[start + 1 : tree.rindex("}")]
    parts, depth, current = [], 0, ""
    for ch in inner:
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
            continue
        depth += ch == "{"
        depth -= ch == "}"
        current += ch
    parts.append(current)
    return [p for part in parts if part.strip() for p in expand(prefix + part.strip())]


def resolve(module, path):
    """The module that `path`, written in `module`, names (the longest known prefix)."""
    segments = [s.strip() for s in path.split("::") if s.strip()]
    if not segments:
        return None
    if segments[0] == "crate":
        base, rest = (), segments[1:]
    elif segments[0] in ("super", "self"):
        # Inside a file, `super` is the file's parent module (mod.rs: the folder's parent).
        base = list(module)
        while segments and segments[0] in ("super", "self"):
            if segments.pop(0) == "super" and base:
                base.pop()
        base, rest = tuple(base), segments
    elif module + (segments[0],) in modules:
        # A path from a folder's mod.rs into one of its files (`use fit::Fit;`).
        base, rest = module, segments
    else:
        return None
    best = None
    for n in range(len(rest) + 1):
        candidate = base + tuple(rest[:n])
        if candidate in modules:
            best = candidate
    return best


edges = {m: set() for m in modules}
for module, path in modules.items():
    text = strip_comments(path.read_text())
    paths = []
    for use in re.findall(r"\buse\s+([^;]+);", text):
        paths += expand(use.replace("\n", " "))
    paths += re.findall(r"\b(?:crate|super)(?:::\w+)+", text)
    paths += re.findall(r"(?<![\w:])\w+(?:::\w+)+", text)
    for p in paths:
        target = resolve(module, p.split(" as ")[0])
        if target is None or target == module:
            continue
        if target == ():  # the crate root only re-exports
            continue
        edges[module].add(target)

# Tarjan's strongly connected components.
index, low, stack, on, cycles, counter = {}, {}, [], set(), [], [0]


def visit(v):
    index[v] = low[v] = counter[0]
    counter[0] += 1
    stack.append(v)
    on.add(v)
    for w in edges[v]:
        if w not in index:
            visit(w)
            low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        component = []
        while True:
            w = stack.pop()
            on.discard(w)
            component.append(w)
            if w == v:
                break
        if len(component) > 1:
            cycles.append(component)


sys.setrecursionlimit(10000)
for v in modules:
    if v not in index:
        visit(v)

name = lambda m: "::".join(m) or "crate"
arrows = sum(len(e) for e in edges.values())
if cycles:
    for component in cycles:
        print("import cycle:", ", ".join(sorted(name(m) for m in component)))
    sys.exit(1)
print(f"no import cycle: {len(modules)} modules, {arrows} arrows")
