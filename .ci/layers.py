#!/usr/bin/env python3
"""Fails when a module of the server crate imports against the layer table of src/lib.rs.

src/lib.rs's doc comment has a table `| layer | modules | what it is |`; a module may import
modules of lower layers, and modules of its own layer in one direction only (the graph of the
crate's top-level modules, collapsed from the file graph of `cycles.py`, has no cycle). Any
top-level module missing from the table fails too, so the table stays complete.

Usage: .ci/layers.py [src]
"""
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cycles  # noqa: E402

ROW = re.compile(r"^//!\s*\|\s*(\d+)\s*\|([^|]*)\|")


def table(lib_rs):
    layers = {}
    for line in open(lib_rs, encoding="utf-8"):
        m = ROW.match(line)
        if m:
            for name in re.findall(r"`([a-z_]+)`", m.group(2)):
                layers[name] = int(m.group(1))
    return layers


def main(root):
    layers = table(os.path.join(root, "lib.rs"))
    if not layers:
        print(f"{root}/lib.rs: no layer table found")
        return 1
    mods, graph = cycles.edges(root)
    failed = False
    top = {}
    for m, targets in graph.items():
        if not m:
            continue
        for t, path in targets.items():
            if not t or t[0] == m[0]:
                continue
            top.setdefault(m[0], {}).setdefault(t[0], (m, path))
    for name in sorted({m[0] for m in mods if m}):
        if name not in layers:
            failed = True
            print(f"src/{name}: not in the layer table of {root}/lib.rs")
    for a, targets in sorted(top.items()):
        for b, (m, path) in sorted(targets.items()):
            if a in layers and b in layers and layers[a] < layers[b]:
                failed = True
                print(
                    f"{os.path.relpath(mods[m])}: `{a}` (layer {layers[a]}) imports `{b}` "
                    f"(layer {layers[b]}): {path}"
                )
    collapsed = {n: {t: p for t, (_, p) in top.get(n, {}).items()} for n in layers}
    for t in list(collapsed):
        for u in collapsed[t]:
            collapsed.setdefault(u, {})
    for comp in cycles.sccs(collapsed):
        if len(comp) > 1:
            failed = True
            print(f"modules importing each other: {', '.join(sorted(comp))}")
            for a in sorted(comp):
                for b, (m, path) in sorted(top.get(a, {}).items()):
                    if b in comp:
                        print(f"  {os.path.relpath(mods[m])} -> {b}  ({path})")
    if not failed:
        print(f"{root}: {len(layers)} modules in {len(set(layers.values()))} layers, every import downwards")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "src"))
