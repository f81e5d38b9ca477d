#!/usr/bin/env bash
# Prints the module dependency graph of the server's and the client core's sources and every
# cycle in it; exits non-zero when there is a cycle that the allow-list below does not explain.
#
# A top-level module is a file `src/a.rs` or a directory `src/a/`; every `crate::a::…` path in
# any of its files (a `use`, a path in a function body, each member of a `use crate::{a, b::c}`
# group) is an edge from it to `a`. A name the crate root re-exports (`crate::Error`, from
# `pub use error::Error`) counts as its module; items the root itself defines count as nothing,
# since every module may use the root. Comments and string literals are skipped.
#
#   scripts/module-graph.sh           the graph of each crate, then its cycles
#   scripts/module-graph.sh --check   cycles only; exit 1 on any not allowed
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 - "$@" <<'PY'
import os, re, sys

CRATES = ["server/src", "core/src"]

# Edges left out of the cycle check, each with its reason, as
#     ("server", "store", "service"): "why this edge may close a cycle for now",
# An edge here still shows in the graph; a cycle that only such edges close is printed as
# allowed and does not fail the check. Empty: no module cycle is tolerated.
ALLOWED = {
}

RAW = re.compile(r'b?r(#*)"')
IDENT = re.compile(r"[A-Za-z0-9_]")

def strip(text):
    """Blanks out comments, string and char literals, keeping line breaks."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append("\n" * text.count("\n", i, j))
            i = j
        elif RAW.match(text, i) and (i == 0 or not IDENT.match(text[i - 1])):
            m = RAW.match(text, i)
            end = text.find('"' + m.group(1), m.end())
            end = n if end < 0 else end + 1 + len(m.group(1))
            out.append(' ""' + "\n" * text.count("\n", i, end))
            i = end
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append('""' + "\n" * text.count("\n", i, j))
            i = j + 1
        elif c == "'":
            # A char literal ('a', '\n', '\u{1F600}') or a lifetime ('a): only a literal goes.
            m = re.match(r"'(\\u\{[0-9a-fA-F]+\}|\\.|[^\\'])'", text[i:])
            if m:
                out.append("' '")
                i += len(m.group(0))
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)

def group_heads(text, start):
    """The first segment of each member of the `{…}` group opening at `start`."""
    depth, item, heads, i = 0, "", [], start
    while i < len(text):
        c = text[i]
        if c == "{":
            depth += 1
            if depth == 1:
                i += 1
                continue
        elif c == "}":
            depth -= 1
            if depth == 0:
                heads.append(item)
                break
        if depth == 1 and c == ",":
            heads.append(item)
            item = ""
        elif depth >= 1:
            item += c
        i += 1
    names = []
    for h in heads:
        m = re.match(r"\s*([A-Za-z_][A-Za-z0-9_]*)", h)
        if m:
            names.append(m.group(1))
    return names

def modules_of(src):
    mods = {}
    for entry in sorted(os.listdir(src)):
        path = os.path.join(src, entry)
        if entry.endswith(".rs") and entry not in ("lib.rs", "main.rs"):
            mods[entry[:-3]] = [path]
        elif os.path.isdir(path):
            files = []
            for root, _, names in os.walk(path):
                files += [os.path.join(root, f) for f in names if f.endswith(".rs")]
            mods.setdefault(entry, []).extend(sorted(files))
    return mods

def root_reexports(src, mods):
    """Names the crate root re-exports from a module: `pub use a::{B, C}` maps B and C to a."""
    lib = os.path.join(src, "lib.rs")
    if not os.path.exists(lib):
        return {}
    text = strip(open(lib).read())
    names = {}
    for m in re.finditer(r"\bpub\s+use\s+(?:crate::)?([A-Za-z_][A-Za-z0-9_]*)::", text):
        module = m.group(1)
        if module not in mods:
            continue
        rest = text[m.end():]
        if rest.startswith("{"):
            for name in group_heads(text, m.end()):
                names[name] = module
        else:
            tail = re.match(r"([A-Za-z_][A-Za-z0-9_:]*)(?:\s+as\s+([A-Za-z_][A-Za-z0-9_]*))?", rest)
            if tail:
                names[tail.group(2) or tail.group(1).split("::")[-1]] = module
    return names

def graph(src):
    mods = modules_of(src)
    reexports = root_reexports(src, mods)
    edges = {m: {} for m in mods}  # from -> to -> first place seen
    for mod, files in mods.items():
        for f in files:
            text = strip(open(f).read())
            for m in re.finditer(r"\bcrate\s*::\s*", text):
                after = m.end()
                if text.startswith("{", after):
                    targets = group_heads(text, after)
                else:
                    h = re.match(r"[A-Za-z_][A-Za-z0-9_]*", text[after:])
                    targets = [h.group(0)] if h else []
                line = text.count("\n", 0, m.start()) + 1
                for t in targets:
                    t = t if t in mods else reexports.get(t)
                    if t and t != mod:
                        edges[mod].setdefault(t, f"{f}:{line}")
    return mods, edges

def sccs(nodes, adj):
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]
    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(adj.get(v, ())):
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
            out.append(sorted(comp))
    sys.setrecursionlimit(10000)
    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return [c for c in out if len(c) > 1]

check = "--check" in sys.argv[1:]
failed = False
for src in CRATES:
    crate = src.split("/")[0]
    mods, edges = graph(src)
    if not check:
        print(f"== {src}: module -> modules it uses")
        for m in sorted(mods):
            print(f"  {m} -> {' '.join(sorted(edges[m])) or '-'}")
    allowed = {(f, t) for (c, f, t) in ALLOWED if c == crate}
    every = sccs(mods, edges)
    strict = sccs(mods, {f: {t for t in ts if (f, t) not in allowed} for f, ts in edges.items()})
    print(f"== {src}: cycles")
    if not every:
        print("  none")
    for comp in every:
        bad = any(set(comp) >= set(s) for s in strict)
        tag = "CYCLE" if bad else "allowed"
        print(f"  {tag}: {' '.join(comp)}")
        for f in comp:
            for t in sorted(edges[f]):
                if t in comp:
                    note = ""
                    if (f, t) in allowed:
                        note = "  (allowed: " + ALLOWED[(crate, f, t)] + ")"
                    print(f"    {f} -> {t}  {edges[f][t]}{note}")
        failed |= bad
if failed:
    print("module cycles found (see above)", file=sys.stderr)
    sys.exit(1)
PY
