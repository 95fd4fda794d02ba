/**
 * The folders tell the architecture (docs/architecture.md, "Layout"): each
 * room of src/ imports only from the rooms below it, and no module imports
 * itself back through others (not even for a type). A move that breaks either
 * fails here, naming the import.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, normalize, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('..', import.meta.url));

/** Lowest first: a room may import from itself and from the rooms before it. */
const ROOMS = ['machines', 'src/base', 'src/protocol', 'src/adapter', 'src/server', 'src/client', 'src/observe', 'src/cli', 'src/index.ts'];

function walk(dir: string): string[] {
  return readdirSync(join(ROOT, dir)).flatMap((name) => {
    const rel = join(dir, name);
    if (statSync(join(ROOT, rel)).isDirectory()) return walk(rel);
    return rel.endsWith('.ts') ? [rel] : [];
  });
}

function roomOf(file: string): number {
  const i = ROOMS.findIndex((room) => file === room || file.startsWith(`${room}/`));
  assert.notEqual(i, -1, `${file} is in no room of the layout; add its folder to ROOMS (and to docs/architecture.md)`);
  return i;
}

/** Relative imports of a file, type-only ones included, as repository paths. */
function importsOf(file: string): string[] {
  const text = readFileSync(join(ROOT, file), 'utf8');
  const out: string[] = [];
  for (const m of text.matchAll(/(?:^|\n)\s*(?:import|export)\b[^'"]*?from\s*['"](\.{1,2}\/[^'"]+)['"]|import\(\s*['"](\.{1,2}\/[^'"]+)['"]\s*\)/g)) {
    const spec = m[1] ?? m[2];
    if (spec) out.push(relative(ROOT, normalize(join(ROOT, dirname(file), spec))));
  }
  return out;
}

const files = [...walk('machines'), ...walk('src')].sort();
const graph = new Map(files.map((f) => [f, importsOf(f)]));

test('the layout has every room and every module in a room', () => {
  assert.ok(files.length > 30, `only ${files.length} modules found under src/ and machines/`);
  for (const f of files) roomOf(f);
  for (const room of ROOMS.slice(0, -1)) assert.ok(files.some((f) => f.startsWith(`${room}/`)), `room ${room} is empty`);
});

test('every import points to the same room or a room below', () => {
  const upward: string[] = [];
  for (const [from, targets] of graph) {
    for (const to of targets) {
      assert.ok(graph.has(to), `${from} imports ${to}, which is not a module under src/ or machines/`);
      if (roomOf(to) > roomOf(from)) upward.push(`${from} -> ${to}`);
    }
  }
  assert.deepEqual(upward, [], 'imports that point up the layout');
});

test('no import circles, type-only imports included', () => {
  const circles: string[] = [];
  const state = new Map<string, 'open' | 'done'>();
  const stack: string[] = [];
  const visit = (f: string): void => {
    state.set(f, 'open');
    stack.push(f);
    for (const to of graph.get(f) ?? []) {
      if (state.get(to) === 'open') circles.push([...stack.slice(stack.indexOf(to)), to].join(' -> '));
      else if (!state.has(to)) visit(to);
    }
    stack.pop();
    state.set(f, 'done');
  };
  for (const f of files) if (!state.has(f)) visit(f);
  assert.deepEqual(circles, []);
});

test('machines/ imports no I/O: only xstate and its own modules', () => {
  for (const f of files.filter((x) => x.startsWith('machines/'))) {
    const text = readFileSync(join(ROOT, f), 'utf8');
    for (const m of text.matchAll(/from\s*['"]([^'".][^'"]*)['"]/g)) {
      assert.equal(m[1], 'xstate', `${f} imports ${m[1]}`);
    }
  }
});
