/** The committed machine diagrams must match the machine definitions (they are generated, never hand-drawn). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { EMBEDDING_DOCS, MACHINES, embedDiagrams, renderDoc } from '../scripts/render-machines.ts';

for (const doc of MACHINES) {
  test(`docs/${doc.file} is up to date with the machine (run npm run docs if not)`, () => {
    const committed = readFileSync(new URL(`../docs/${doc.file}`, import.meta.url), 'utf8');
    assert.equal(committed, renderDoc(doc));
  });
  test(`docs/${doc.file} draws every state of the machine`, () => {
    const text = renderDoc(doc);
    const walk = (n: { id: string; states: Record<string, unknown> }): string[] => [
      n.id,
      ...Object.values(n.states).flatMap((c) => walk(c as typeof n)),
    ];
    for (const id of walk(doc.machine.root as never).slice(1)) {
      assert.ok(text.includes(`as ${id.replace(/[^A-Za-z0-9_]/g, '_')}`), `state ${id} missing from the diagram`);
    }
  });
}

for (const file of EMBEDDING_DOCS) {
  test(`docs/${file} embeds the current generated diagram (run npm run docs if not)`, () => {
    const committed = readFileSync(new URL(`../docs/${file}`, import.meta.url), 'utf8');
    assert.match(committed, /<!-- machine:[\w.-]+:start/);
    assert.equal(committed, embedDiagrams(committed));
  });
}

test('every machine exported from machines/ has a generated doc page', async () => {
  const exported = Object.entries(await import('../machines/index.ts')).filter(
    ([, value]) => typeof value === 'object' && value !== null && 'root' in value && 'config' in value,
  );
  assert.ok(exported.length >= 3, `machines found: ${exported.map(([name]) => name).join(', ')}`);
  for (const [name, machine] of exported) {
    assert.ok(MACHINES.some((doc) => doc.machine === machine), `${name} has no entry in scripts/render-machines.ts MACHINES`);
  }
});

test('a transition of the machine root is drawn from every live top-level state (the session machine: overflow, end)', () => {
  const doc = MACHINES.find((d) => d.file === 'session-machine.md')!;
  const text = renderDoc(doc);
  for (const from of ['attached', 'resuming', 'detached']) {
    assert.ok(text.includes(`session_${from} --> session_overflowed : overflow`), `overflow from ${from}`);
    assert.ok(text.includes(`session_${from} --> session_ended : end`), `end from ${from}`);
  }
  assert.ok(!/\n {2}session --> /.test(text), 'the root is not drawn as a state');
});
