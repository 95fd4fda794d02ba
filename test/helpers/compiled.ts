/**
 * The processes the tests spawn (the CLI, the cluster and session-store node
 * fixtures) run as plain JavaScript: each entry is bundled once per test
 * process with esbuild (our code inlined, packages external, as
 * bench/lib/compile.ts does for the benchmark servers), instead of compiling
 * it again through tsx in every child. Measured on the 2-core machine: a
 * `node --import tsx src/cli/main.ts --help` takes 0.95–1.0 s of CPU, the
 * bundle 0.32 s; the bundle itself takes ~0.2 s, once per file
 * (docs/testing.md, "Wall time"). The code is the same source through the
 * same compiler (tsx is esbuild too).
 *
 * The bundle is written to test/.build/ (ignored by git), so that its
 * packages resolve from the repository's node_modules, and so that it sits
 * two folders below the root as src/cli/ does: the CLI finds www/, dist/browser/
 * and package.json relative to its own file. One file per test process (its
 * pid in the name: two test files run at once), removed when the process exits.
 */
import { mkdirSync, rmSync } from 'node:fs';
import { basename, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildSync } from 'esbuild';

const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));
const OUT_DIR = join(REPO_ROOT, 'test', '.build');
const built = new Map<string, string>();

process.on('exit', () => {
  for (const file of built.values()) rmSync(file, { force: true });
});

/** Path of the bundled `entry` (relative to the repository root, e.g. 'src/cli/main.ts'), built on first use. */
export function compiledEntry(entry: string): string {
  let out = built.get(entry);
  if (out) return out;
  mkdirSync(OUT_DIR, { recursive: true });
  out = join(OUT_DIR, `${basename(entry).replace(/\.ts$/, '')}-${process.pid}.mjs`);
  buildSync({
    entryPoints: [join(REPO_ROOT, entry)],
    outfile: out,
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    packages: 'external',
    logLevel: 'error',
  });
  built.set(entry, out);
  return out;
}
