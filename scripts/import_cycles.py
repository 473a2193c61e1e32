#!/usr/bin/env python3
"""Import cycles between the modules of a crate, read from its sources.

    scripts/import_cycles.py SRC_DIR CRATE_NAME [--siblings]

Module M imports module N when M's code names N by a path: a `use` tree,
an inline `crate::`, `super::`, `self::` or `CRATE_NAME::` path, or a path
through one of M's child modules. A name a module re-exports (`pub use`)
counts as an import of the module it comes from. Test modules
(`#[cfg(test)] mod tests`) and comments are left out; so is the inside of
an inline `mod name { ... }`, whose `super::` means another module.

Prints each cycle (a strongly connected set of modules) and a summary; the
exit status is 1 if there is one. With --siblings, a module and its own
parent importing each other does not count: the children of one directory
that implement their parent's type by concern (as rustls splits its
connection) do that; any other cycle is one to break.

A reading of the sources, not of the compiler's resolution: macros and
glob imports are not followed.
"""
import os
import re
import sys


def modules(src):
    """(path of the module as a tuple) -> file, for every .rs under src."""
    found = {}
    for root, _, files in os.walk(src):
        for name in files:
            if not name.endswith(".rs"):
                continue
            path = os.path.join(root, name)
            parts = os.path.relpath(path, src)[:-3].split(os.sep)
            if parts[-1] in ("mod", "lib", "main"):
                parts = parts[:-1]
            found[tuple(parts)] = path
    return found


def drop_inline_mods(text):
    while True:
        m = re.search(r"\bmod\s+\w+\s*\{", text)
        if not m:
            return text
        depth, i = 0, m.end() - 1
        while i < len(text):
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
                if depth == 0:
                    break
            i += 1
        text = text[: m.start()] + text[i + 1 :]


def code_of(path):
    text = open(path, encoding="utf-8").read()
    text = re.split(r"#\[cfg\(test\)\]\s*mod\s+tests\b", text)[0]
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r'"(\\.|[^"\\])*"', '""', text)
    return drop_inline_mods(text)


def expand(tree):
    """'a::{b, c::{d, e}}' -> ['a::b', 'a::c::d', 'a::c::e']"""
    tree = tree.strip()
    m = re.match(r"^(.*?)\{(.*)\}$", tree, re.S)
    if not m:
        return [tree]
    prefix, inner = m.group(1), m.group(2)
    parts, depth, current = [], 0, ""
    for ch in inner:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return [prefix + p for part in parts if part.strip() for p in expand(part)]


def segments(path):
    path = re.sub(r"\s+as\s+\w+", "", path)
    return [s.strip() for s in path.split("::") if s.strip()]


def absolute(mods, crate, module, segs):
    """The path from the crate root that `segs`, written in `module`, names."""
    if segs[0] in ("crate", crate):
        return list(segs[1:])
    if segs[0] == "super":
        base, rest = list(module), list(segs)
        while rest and rest[0] == "super":
            base, rest = base[:-1], rest[1:]
        return base + rest
    if segs[0] == "self":
        return list(module) + list(segs[1:])
    if module + (segs[0],) in mods:
        return list(module) + list(segs)
    return None


def longest_module(mods, path):
    """The deepest module that `path` starts with, and the rest."""
    best = 0
    for i in range(1, len(path) + 1):
        if tuple(path[:i]) in mods:
            best = i
    return tuple(path[:best]), path[best:]


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    if len(args) != 2:
        sys.exit(__doc__)
    src, crate = args
    siblings = "--siblings" in sys.argv
    mods = modules(src)
    code = {m: code_of(p) for m, p in mods.items()}

    def paths_in(module):
        text = code[module]
        found = []
        for use in re.finditer(r"\buse\s+([^;]+);", text):
            found += expand(use.group(1))
        found += re.findall(r"(?<![:\w])((?:crate|super|self|%s)(?:::\w+)+)" % crate, text)
        for child in [k[-1] for k in mods if k[:-1] == module and len(k) == len(module) + 1]:
            found += re.findall(r"(?<![:\w])(%s(?:::\w+)+)" % child, text)
        return [segments(p) for p in found]

    # (module, name) -> the module a re-exported name comes from
    origin = {}
    for m in mods:
        for use in re.finditer(r"\bpub(?:\([\w:\s]+\))?\s+use\s+([^;]+);", code[m]):
            for path in expand(use.group(1)):
                segs = segments(path)
                full = absolute(mods, crate, m, segs) if len(segs) > 1 else None
                if full:
                    source, _ = longest_module(mods, full[:-1])
                    origin[(m, segs[-1])] = source

    edges = {m: set() for m in mods}
    for m in mods:
        for segs in paths_in(m):
            full = absolute(mods, crate, m, segs) if segs else None
            if full is None:
                continue
            target, rest = longest_module(mods, full)
            if rest and (target, rest[0]) in origin:
                target = origin[(target, rest[0])]
            if target == m:
                continue
            if siblings and (target == m[:-1] or m == target[:-1]):
                continue
            edges[m].add(target)

    # Tarjan's strongly connected components.
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []
    counter = [0]
    sys.setrecursionlimit(10_000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(component)

    for v in sorted(mods):
        if v not in index:
            visit(v)
    name = lambda k: "::".join(k) or "(crate root)"
    for component in cycles:
        print(f"{crate}: import cycle: " + ", ".join(sorted(name(k) for k in component)))
    total = sum(len(e) for e in edges.values())
    print(f"{crate}: {len(mods)} modules, {total} imports, {len(cycles)} cycles")
    sys.exit(1 if cycles else 0)


if __name__ == "__main__":
    main()
