#!/usr/bin/env python3
"""Fails when a crate's modules import each other in a cycle.

For each crate given (its `src/` directory), every `.rs` file is one module. An edge A -> B is a
path in A's code (a `use` or an inline path, tests included; comments and strings excluded) that
names module B: `crate::b::...`, `super::...`, `self::...`, or a child module by name. Declaring
a child (`mod b;`) is not an edge. Cycles are the strongly connected components of more than
one module; each is printed with one import per edge so it can be found.

Usage: .ci/cycles.py src tools/client/src tools/cli/src ...
"""
import os
import re
import sys


def strip(code):
    """Code without comments, string and char literals (their content could look like paths)."""
    out = []
    i, n = 0, len(code)
    while i < n:
        c = code[i]
        if code.startswith("//", i):
            j = code.find("\n", i)
            i = n if j < 0 else j
        elif code.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if code.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif code.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        elif c == "r" and re.match(r'r#*"', code[i:i + 10]) and (i == 0 or not (code[i - 1].isalnum() or code[i - 1] == "_")):
            m = re.match(r'r(#*)"', code[i:])
            end = '"' + m.group(1)
            j = code.find(end, i + len(m.group(0)))
            i = n if j < 0 else j + len(end)
            out.append('""')
        elif c == '"':
            i += 1
            while i < n and code[i] != '"':
                i += 2 if code[i] == "\\" else 1
            i += 1
            out.append('""')
        elif c == "'" and re.match(r"'(\\.|[^\\'])'", code[i:i + 4] + "   " if i + 4 <= n else code[i:]):
            m = re.match(r"'(\\u\{[0-9a-fA-F]+\}|\\.|[^\\'])'", code[i:])
            if m:
                i += len(m.group(0))
                out.append("' '")
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def modules(root):
    """Module path (tuple) -> file, for every .rs file under the crate's src dir."""
    mods = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            if not f.endswith(".rs"):
                continue
            full = os.path.join(dirpath, f)
            rel = os.path.relpath(full, root)[:-3].split(os.sep)
            if rel in (["lib"], ["main"]):
                path = ()
            elif rel[-1] == "mod":
                path = tuple(rel[:-1])
            else:
                path = tuple(rel)
            if path in mods and path == ():
                # A crate with both: lib.rs is the library root; main.rs is a crate of its own.
                if rel == ["main"]:
                    continue
            mods[path] = full
    return mods


def expand_use(tree):
    """`a::{b, c::{d, e}}` -> ["a::b", "a::c::d", "a::c::e"]."""
    tree = re.sub(r"\s+", "", tree)
    depth = 0
    for i, ch in enumerate(tree):
        if ch == "{":
            if depth == 0:
                prefix, inner = tree[:i], tree[i + 1:tree.rindex("}")]
                parts, d, start = [], 0, 0
                for j, c2 in enumerate(inner):
                    if c2 == "{":
                        d += 1
                    elif c2 == "}":
                        d -= 1
                    elif c2 == "," and d == 0:
                        parts.append(inner[start:j])
                        start = j + 1
                parts.append(inner[start:])
                out = []
                for p in parts:
                    if p:
                        out += [prefix + q for q in expand_use(p)]
                return out
            depth += 1
    return [tree]


def resolve(segs, here, inline, mods):
    """The module a path names, from inline module `inline` of file module `here`: the longest
    prefix that is a file module (an inline module belongs to its file)."""
    if not segs:
        return None
    if segs[0] == "crate":
        base, rest = (), segs[1:]
    elif segs[0] in ("self", "super"):
        base, rest = here + inline, segs
        while rest and rest[0] in ("self", "super"):
            if rest[0] == "super":
                base = base[:-1]
            rest = rest[1:]
        if len(base) > len(here) and base[:len(here)] == here:
            return here
    elif here + (segs[0],) in mods:
        base, rest = here, segs
    else:
        return None
    best = base if base in mods else None
    for k in range(1, len(rest) + 1):
        cand = base + tuple(rest[:k])
        if cand in mods:
            best = cand
        else:
            break
    return best


PATH = re.compile(r"\b(?:crate|super|self)(?:::[A-Za-z_][A-Za-z0-9_]*)+|\b[a-z_][a-z0-9_]*(?:::[A-Za-z_][A-Za-z0-9_]*)+")
USE = re.compile(r"\buse\s+([^;]+);")


def edges(root):
    mods = modules(root)
    graph = {m: {} for m in mods}
    for here, path in mods.items():
        code = strip(open(path, encoding="utf-8").read())
        for inline, chunk in inline_modules(code):
            paths = []
            for m in USE.finditer(chunk):
                paths += [p.split(" as ")[0] for p in expand_use(m.group(1))]
            paths += PATH.findall(USE.sub(" ", chunk))
            for p in paths:
                segs = [s for s in p.split("::") if s and s != "*"]
                target = resolve(segs, here, inline, mods)
                if target is not None and target != here:
                    graph[here].setdefault(target, p)
    return mods, graph


INLINE = re.compile(r"\bmod\s+([a-z_][a-z0-9_]*)\s*\{")


def inline_modules(code):
    """(inline module path within the file, its own code) for the file and each `mod x { }`."""
    spans = []  # (start, end, name path)

    def scan(start, end, prefix):
        i = start
        while True:
            m = INLINE.search(code, i, end)
            if not m:
                return
            depth, j = 1, m.end()
            while j < end and depth:
                depth += {"{": 1, "}": -1}.get(code[j], 0)
                j += 1
            name = prefix + (m.group(1),)
            spans.append((m.end(), j - 1, name))
            scan(m.end(), j - 1, name)
            i = j

    scan(0, len(code), ())
    out = []
    for start, end, name in [(0, len(code), ())] + spans:
        inner = sorted((s, e) for s, e, n in spans if n[:-1] == name and s >= start and e <= end)
        own, pos = [], start
        for s, e in inner:
            own.append(code[pos:s])
            pos = e
        own.append(code[pos:end])
        out.append((name, "".join(own)))
    return out


def sccs(graph):
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            out.append(comp)

    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            visit(v)
    return out


def main(roots):
    failed = False
    for root in roots:
        mods, graph = edges(root)
        cyclic = False
        for comp in sccs(graph):
            if len(comp) < 2:
                continue
            failed = cyclic = True
            members = set(comp)
            print(f"{root}: import cycle through {len(comp)} modules:")
            for m in sorted(comp):
                for t, p in sorted(graph[m].items()):
                    if t in members:
                        print(f"  {os.path.relpath(mods[m])} -> {os.path.relpath(mods[t])}  ({p})")
        if not cyclic:
            print(f"{root}: {len(mods)} modules, no import cycle")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["src"]))
