#!/usr/bin/env node
// `npm run build` (and `prepare`): dist/ from scratch. The steps are listed here once, and the test
// runner (scripts/run-tests.mjs) runs the same list itself, so that the files that need only the
// browser bundle start as soon as it exists instead of after tsc (0.4-0.7 s against 3.9-5.8 s
// single-threaded, alone at load 3-4; 8.8-10.7 s at load ~6 when tsc checked in parallel).
// tsc does not write under dist/browser/, so the order does not change what dist/ holds.
import { rmSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { delimiter, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** dist/ is removed first, so that nothing of an older build is packed. */
export const cleanDist = () => rmSync('dist', { recursive: true, force: true });

/**
 * Each step's shell command, and what of dist/ exists once it has run ('all': the whole of it).
 * tsc runs --singleThreaded, as `npm run typecheck` and the tests' tsc runs do: TypeScript 7 checks
 * with several checkers in parallel by default, which on this 2-core machine, beside the test files
 * the runner starts at once, costs CPU and gains no wall time. The same emit, byte for byte (dist/
 * diffed against a parallel build); alone at load 3-4, two pairs back to back: 7.1, 7.1 s of CPU
 * (8.7, 8.1 s wall) parallel against 4.0, 4.3 s (5.8, 3.9 s wall) single-threaded.
 */
export const BUILD_STEPS = [
  { builds: 'browser', command: 'node scripts/build-browser.mjs' },
  { builds: 'all', command: 'tsc -p tsconfig.build.json --singleThreaded' },
];

/** A command through the shell with node_modules/.bin on the PATH, as npm runs a script (without npm's own start). */
export function shell(command, stdio = ['ignore', 'pipe', 'pipe']) {
  const PATH = [resolve('node_modules', '.bin'), process.env.PATH].join(delimiter);
  return spawn(command, { shell: true, stdio, env: { ...process.env, PATH } });
}

if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  cleanDist();
  for (const { command } of BUILD_STEPS) {
    const code = await new Promise((done) => shell(command, 'inherit').on('close', (c, signal) => done(c ?? signal)));
    if (code !== 0) {
      console.error(`build: \`${command}\` failed (exit ${code})`);
      process.exit(typeof code === 'number' ? code : 1);
    }
  }
}
