#!/usr/bin/env node
// `npm run build` (and `prepare`): dist/ from scratch. The steps are listed here once, and the test
// runner (scripts/run-tests.mjs) runs the same list itself, so that the files that need only the
// browser bundle start as soon as it exists instead of after tsc (0.4-0.7 s against 3.9-5.8 s
// single-threaded, alone at load 3-4; 8.8-10.7 s at load ~6 when tsc checked in parallel).
// tsc does not write under dist/browser/, so the order does not change what dist/ holds.
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { delimiter, dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** dist/ is removed first, so that nothing of an older build is packed (and its stamp with it). */
export const cleanDist = (root = '.') => {
  rmSync(join(root, STAMP), { force: true });
  rmSync(join(root, 'dist'), { recursive: true, force: true });
};

// The build's stamp: what a finished build was made from and what it wrote, so that the test runner
// can tell a dist/ that is up to date from one that is not, and skip a second build of the same
// sources. On a fresh clone `npm install` has just built dist/ (`prepare`), and the runner built it
// again: ~10 s of CPU (tsc's emit and the browser bundle) at the start of every `npm test`.
// The inputs are every file the two steps read: the sources, the compiler and bundler settings, the
// build scripts, and what is installed (npm's own record, node_modules/.package-lock.json: another
// version of xstate, esbuild or TypeScript changes the output). The output is hashed too, so a file
// of dist/ edited, deleted or added by hand makes the build stale as well. The stamp lives beside the
// installed packages, not in dist/ (which is packed).
export const STAMP = 'node_modules/.cache/ws-supervisor/build-stamp.json';
export const BUILD_INPUTS = [
  'src',
  'machines',
  'tsconfig.json',
  'tsconfig.build.json',
  'scripts/build.mjs',
  'scripts/build-browser.mjs',
  'package.json',
  'package-lock.json',
  'node_modules/.package-lock.json',
];

/** A sha256 over the files under `paths` (files or directories, relative to `root`): each file's path and bytes, in sorted order; a missing path counts as missing. */
export function treeHash(root, paths) {
  const hash = createHash('sha256');
  const visit = (rel) => {
    const abs = join(root, rel);
    if (!existsSync(abs)) {
      hash.update(`missing ${rel}\0`);
      return;
    }
    if (statSync(abs).isDirectory()) {
      for (const name of readdirSync(abs).sort()) visit(join(rel, name));
      return;
    }
    hash.update(`file ${relative(root, abs).split('\\').join('/')}\0`);
    hash.update(readFileSync(abs));
    hash.update('\0');
  };
  for (const p of paths) visit(p);
  return hash.digest('hex');
}

/** Records that dist/ under `root` was just built from the current inputs. */
export function writeStamp(root = '.') {
  const file = join(root, STAMP);
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, `${JSON.stringify({ inputs: treeHash(root, BUILD_INPUTS), dist: treeHash(root, ['dist']) }, null, 2)}\n`);
}

/**
 * Whether dist/ under `root` is what a build of the current inputs wrote: null when it is, else why
 * not (for the runner's log).
 */
export function staleBecause(root = '.') {
  const file = join(root, STAMP);
  if (!existsSync(file)) return 'no stamp of a finished build';
  let stamp;
  try {
    stamp = JSON.parse(readFileSync(file, 'utf8'));
  } catch {
    return 'its stamp is unreadable';
  }
  if (stamp.inputs !== treeHash(root, BUILD_INPUTS)) return 'its sources, settings or installed packages changed since';
  if (stamp.dist !== treeHash(root, ['dist'])) return 'dist/ changed since it was built';
  return null;
}

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

/** Whether this module is the process's entry (`node scripts/build.mjs`, `npm run build`): only then does it build. */
export const runAsScript = process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url);

if (runAsScript) {
  cleanDist();
  for (const { command } of BUILD_STEPS) {
    const code = await new Promise((done) => shell(command, 'inherit').on('close', (c, signal) => done(c ?? signal)));
    if (code !== 0) {
      console.error(`build: \`${command}\` failed (exit ${code})`);
      process.exit(typeof code === 'number' ? code : 1);
    }
  }
  writeStamp();
}
