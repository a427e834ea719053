"""Import loops between the files of each crate under a directory (scripts/check-imports.sh).

A file imports another when it names a module (or an item) of it with a `crate::`, `super::`
or `self::` path, or a child module by its name, in a `use` or anywhere in its code. A
module's own file (lib.rs, main.rs, mod.rs) is its children's namespace: it declares them
and may re-export and use them, and they use what it defines; those edges do not count.
Prints each loop with its edges; exits 1 when there is one.
"""
import os, re, sys

def strip(src):
    # Remove comments, strings and char literals (roughly) so that paths in them do not count.
    out = []
    i, n = 0, len(src)
    while i < n:
        c = src[i]
        if src.startswith('//', i):
            j = src.find('\n', i); i = n if j < 0 else j
        elif src.startswith('/*', i):
            depth = 1; i += 2
            while i < n and depth:
                if src.startswith('/*', i): depth += 1; i += 2
                elif src.startswith('*/', i): depth -= 1; i += 2
                else: i += 1
        elif c == 'r' and re.match(r'r#*"', src[i:i+10]) and (i == 0 or not (src[i-1].isalnum() or src[i-1] == '_')):
            m = re.match(r'r(#*)"', src[i:]); end = '"' + m.group(1)
            j = src.find(end, i + len(m.group(0))); i = n if j < 0 else j + len(end); out.append('""')
        elif c == '"':
            i += 1
            while i < n and src[i] != '"':
                i += 2 if src[i] == '\\' else 1
            i += 1; out.append('""')
        elif c == "'" and re.match(r"'(\\.|[^\\'])'|'\\u\{[0-9a-fA-F]+\}'|'\\x..'", src[i:i+12]):
            m = re.match(r"'(\\u\{[0-9a-fA-F]+\}|\\x..|\\.|[^\\'])'", src[i:]); i += len(m.group(0)); out.append("' '")
        else:
            out.append(c); i += 1
    return ''.join(out)

def expand(tree):
    # Expand a use tree ("a::{b, c::{d, e}}") into full paths.
    tree = re.sub(r'\s+', '', tree)
    def split_top(s):
        parts, depth, cur = [], 0, ''
        for ch in s:
            if ch == '{': depth += 1
            if ch == '}': depth -= 1
            if ch == ',' and depth == 0: parts.append(cur); cur = ''
            else: cur += ch
        if cur: parts.append(cur)
        return parts
    def go(prefix, s):
        i = s.find('{')
        if i < 0:
            s = re.sub(r'\bas\w+$', '', s)
            return [prefix + s]
        head, body = s[:i], s[i+1:s.rindex('}')]
        res = []
        for p in split_top(body):
            res += go(prefix + head, p)
        return res
    return go('', tree)

def main(root):
    files = {}  # module path tuple -> file
    crates = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in ('target', '.git', 'node_modules')]
        if 'Cargo.toml' in filenames and os.path.isdir(os.path.join(dirpath, 'src')):
            crates.append(os.path.join(dirpath, 'src'))
    edges = {}
    for src in crates:
        mods = {}   # module tuple -> file (relative)
        for dirpath, _, filenames in os.walk(src):
            for f in filenames:
                if not f.endswith('.rs'): continue
                p = os.path.join(dirpath, f)
                rel = os.path.relpath(p, src)[:-3].split(os.sep)
                if rel[-1] in ('mod', 'lib', 'main'):
                    rel = rel[:-1]
                if rel and rel[0] == 'bin': continue
                mods[tuple(rel)] = p
        texts = {p: strip(open(p).read()) for p in mods.values()}
        # Inline modules: `mod name {` inside a file is a module living in that file.
        inline = {}
        def scan_inline(m, p):
            text = texts[p]
            stack = []  # (module, depth at open)
            depth = 0
            spans = []  # (start, end, module)
            for tok in re.finditer(r'\bmod\s+(\w+)\s*\{|\{|\}', text):
                if tok.group(1):
                    cur = stack[-1][0] if stack else m
                    stack.append((cur + (tok.group(1),), depth, tok.start())); depth += 1
                elif tok.group(0) == '{': depth += 1
                else:
                    depth -= 1
                    if stack and stack[-1][1] == depth:
                        mod, _, st = stack.pop(); spans.append((st, tok.end(), mod)); inline[mod] = p
            return spans
        spans = {p: scan_inline(m, p) for m, p in mods.items()}
        allmods = dict(mods); allmods.update(inline)
        def module_at(m, p, pos):
            best = m
            for st, en, mod in spans[p]:
                if st <= pos < en and len(mod) > len(best): best = mod
            return best
        def resolve(cur, path):
            segs = path.split('::')
            if segs[0] == 'crate': base, segs = (), segs[1:]
            elif segs[0] in ('super', 'self'):
                base = cur
                while segs and segs[0] in ('super', 'self'):
                    if segs[0] == 'super': base = base[:-1]
                    segs = segs[1:]
            elif cur + (segs[0],) in allmods: base = cur
            else: return None
            for s in segs:
                if base + (s,) in allmods: base = base + (s,)
                else: break
            return allmods.get(base)
        for m, p in mods.items():
            text = texts[p]
            targets = set()
            for u in re.finditer(r'\buse\s+([^;]+);', text):
                cur = module_at(m, p, u.start())
                for path in expand(u.group(1)):
                    t = resolve(cur, path)
                    if t: targets.add(t)
            for u in re.finditer(r'(?<![\w:])((?:crate|super|self)(?:::\w+)+)', text):
                cur = module_at(m, p, u.start())
                t = resolve(cur, u.group(1))
                if t: targets.add(t)
            # A module's own file (lib.rs, mod.rs) is its children's namespace: it declares them
            # and may re-export and use them, and they use what it defines. Only other edges
            # count.
            lineage = {mods[m[:k]] for k in range(len(m)) if m[:k] in mods}
            lineage |= {f for q, f in mods.items() if q[:len(m)] == m}
            edges[p] = {t for t in targets if t not in lineage}
    # Strongly connected components (Tarjan).
    index, low, onstack, stack, sccs, counter = {}, {}, set(), [], [], [0]
    sys.setrecursionlimit(10000)
    def visit(v):
        index[v] = low[v] = counter[0]; counter[0] += 1; stack.append(v); onstack.add(v)
        for w in edges.get(v, ()):
            if w not in index: visit(w); low[v] = min(low[v], low[w])
            elif w in onstack: low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop(); onstack.discard(w); comp.append(w)
                if w == v: break
            if len(comp) > 1: sccs.append(sorted(comp))
    for v in sorted(edges):
        if v not in index: visit(v)
    for comp in sccs:
        rels = [os.path.relpath(c, root) for c in comp]
        print('import loop: ' + ', '.join(rels))
        for c in comp:
            for t in sorted(edges[c] & set(comp)):
                print(f'    {os.path.relpath(c, root)} -> {os.path.relpath(t, root)}')
    return 1 if sccs else 0

sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else '.'))
