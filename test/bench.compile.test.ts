/**
 * bench/lib/compile.ts writes each bundle under a name of its process and
 * renames it into place: a build that throws on the way must not leave that
 * partial file behind in bench/.build/. Here the rename fails (a folder holds
 * the output's name). Before, the `.tmp` file stayed.
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { compiledEntry } from '../bench/lib/compile.ts';

const BENCH_DIR = fileURLToPath(new URL('../bench/', import.meta.url));

test('a bench build that throws leaves no partial (.tmp) file in bench/.build/', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'bench-compile-'));
  const name = `compile-fails-${process.pid}`;
  const buildDir = join(BENCH_DIR, '.build');
  const taken = join(buildDir, `${name}.mjs`);
  t.after(() => {
    rmSync(dir, { recursive: true, force: true });
    rmSync(taken, { recursive: true, force: true });
    for (const f of readdirSync(buildDir)) if (f.startsWith(`${name}.mjs.`)) rmSync(join(buildDir, f), { force: true });
  });
  writeFileSync(join(dir, `${name}.ts`), 'export const answer: number = 42;\n');
  mkdirSync(taken, { recursive: true });
  assert.throws(() => compiledEntry(relative(BENCH_DIR, join(dir, `${name}.ts`))), /EISDIR|ENOTEMPTY|EEXIST|directory/i);
  assert.deepEqual(readdirSync(buildDir).filter((f) => f.startsWith(`${name}.mjs.`)), [], 'no partial file left');
});
