// The build's stamp (scripts/build.mjs): the test runner skips building dist/ again only when a
// finished build wrote it from the current inputs. Each way dist/ can be out of date must be seen:
// a source changed, added or removed; a setting or the installed packages changed; a file of dist/
// edited or removed by hand; no stamp (a build that failed or never finished); an unreadable stamp.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { BUILD_INPUTS, STAMP, cleanDist, runAsScript, staleBecause, writeStamp } from '../scripts/build.mjs';

/** A project with one file per input and a built dist/, stamped. */
function project(): string {
  const root = mkdtempSync(join(tmpdir(), 'ws-supervisor-build-'));
  const put = (rel: string, text: string) => {
    mkdirSync(dirname(join(root, rel)), { recursive: true });
    writeFileSync(join(root, rel), text);
  };
  put('src/index.ts', 'export const a = 1;\n');
  put('src/client/browser.ts', 'export const b = 2;\n');
  put('machines/connection.machine.ts', 'export const m = 3;\n');
  for (const file of BUILD_INPUTS.filter((p) => p.includes('.'))) put(file, `{"name":"${file}"}\n`);
  put('dist/src/index.js', 'export const a = 1;\n');
  put('dist/browser/ws-supervisor-client.js', 'const b=2;\n');
  writeStamp(root);
  return root;
}

test('importing the build script builds nothing: it builds only when it is the entry point', () => {
  // In the test runner's bundle its import.meta.url must be its own (scripts/bundle-tests.mjs), not the
  // bundle's: else it took itself for the entry and ran a whole build, deleting dist/ under the files
  // that serve it.
  assert.equal(runAsScript, false);
});

test('a dist/ just built and stamped is fresh; the stamp is outside dist/ (which is packed)', (t) => {
  const root = project();
  t.after(() => rmSync(root, { recursive: true, force: true }));
  assert.equal(staleBecause(root), null);
  assert.ok(!STAMP.startsWith('dist/'), STAMP);
});

test('every kind of change to what the build reads makes dist/ stale', (t) => {
  const cases: Array<[string, (root: string) => void]> = [
    ['a source edited', (r) => writeFileSync(join(r, 'src/index.ts'), 'export const a = 2;\n')],
    ['a source added', (r) => writeFileSync(join(r, 'src/extra.ts'), 'export {};\n')],
    ['a source removed', (r) => rmSync(join(r, 'src/client/browser.ts'))],
    ['a machine edited', (r) => writeFileSync(join(r, 'machines/connection.machine.ts'), 'export const m = 4;\n')],
    ['a source renamed (same bytes)', (r) => {
      rmSync(join(r, 'src/index.ts'));
      writeFileSync(join(r, 'src/main.ts'), 'export const a = 1;\n');
    }],
    ['the compiler settings', (r) => writeFileSync(join(r, 'tsconfig.build.json'), '{}\n')],
    ['the bundler script', (r) => writeFileSync(join(r, 'scripts/build-browser.mjs'), '// changed\n')],
    ['the installed packages', (r) => writeFileSync(join(r, 'node_modules/.package-lock.json'), '{"xstate":"6"}\n')],
  ];
  for (const [what, change] of cases) {
    const root = project();
    try {
      change(root);
      assert.match(staleBecause(root) ?? 'fresh', /sources, settings or installed packages changed/, what);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  }
});

test('dist/ changed by hand, a missing stamp or an unreadable one: stale, each with its reason', (t) => {
  const cases: Array<[string, (root: string) => void, RegExp]> = [
    ['a file of dist/ edited', (r) => writeFileSync(join(r, 'dist/src/index.js'), 'export const a = 9;\n'), /dist\/ changed since/],
    ['a file of dist/ removed', (r) => rmSync(join(r, 'dist/browser/ws-supervisor-client.js')), /dist\/ changed since/],
    ['a file added to dist/', (r) => writeFileSync(join(r, 'dist/stray.js'), '\n'), /dist\/ changed since/],
    ['dist/ removed (a build begun: cleanDist)', (r) => cleanDist(r), /no stamp/],
    ['the stamp removed', (r) => rmSync(join(r, STAMP)), /no stamp/],
    ['the stamp unreadable', (r) => writeFileSync(join(r, STAMP), '{'), /unreadable/],
  ];
  for (const [what, change, reason] of cases) {
    const root = project();
    try {
      change(root);
      assert.match(staleBecause(root) ?? 'fresh', reason, what);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  }
  // And a new stamp after the change makes it fresh again (the runner writes one after its build).
  const root = project();
  t.after(() => rmSync(root, { recursive: true, force: true }));
  writeFileSync(join(root, 'src/index.ts'), 'export const a = 5;\n');
  writeFileSync(join(root, 'dist/src/index.js'), 'export const a = 5;\n');
  writeStamp(root);
  assert.equal(staleBecause(root), null);
});
