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
 * pid in the name: several test files run at once), removed when the process exits.
 *
 * Under scripts/run-tests.mjs (`npm test`), which names its run in
 * WS_SUPERVISOR_TEST_RUN, the files of one run share each bundle instead: the
 * first file that needs it builds it (to a file of its own, renamed into place,
 * so files racing to build it never see a partial one), the others use it, and
 * the runner removes them after the run. 17 files start the CLI; each built it
 * for itself before (~0.25 s of CPU each).
 */
import { existsSync, mkdirSync, renameSync, rmSync } from 'node:fs';
import { basename, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildSync } from 'esbuild';

const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));
const OUT_DIR = join(REPO_ROOT, 'test', '.build');
const built = new Map<string, string>();
/** The run of scripts/run-tests.mjs this process belongs to (its bundles are shared), or none. */
const RUN = /^[\w-]+$/.test(process.env.WS_SUPERVISOR_TEST_RUN ?? '') ? process.env.WS_SUPERVISOR_TEST_RUN! : null;

process.on('exit', () => {
  if (RUN === null) for (const file of built.values()) rmSync(file, { force: true });
});

/** Path of the bundled `entry` (relative to the repository root, e.g. 'src/cli/main.ts'), built on first use. */
export function compiledEntry(entry: string): string {
  let out = built.get(entry);
  if (out) return out;
  mkdirSync(OUT_DIR, { recursive: true });
  const name = basename(entry).replace(/\.ts$/, '');
  out = join(OUT_DIR, RUN === null ? `${name}-${process.pid}.mjs` : `${name}-run-${RUN}.mjs`);
  if (RUN !== null && existsSync(out)) {
    built.set(entry, out);
    return out;
  }
  const building = RUN === null ? out : `${out}.${process.pid}.tmp`;
  try {
    buildSync({
      entryPoints: [join(REPO_ROOT, entry)],
      outfile: building,
      bundle: true,
      platform: 'node',
      format: 'esm',
      target: 'node20',
      packages: 'external',
      logLevel: 'error',
    });
  } catch (error) {
    if (building !== out) rmSync(building, { force: true });
    throw error;
  }
  if (building !== out) renameSync(building, out);
  built.set(entry, out);
  return out;
}
