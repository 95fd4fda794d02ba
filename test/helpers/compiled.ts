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
/**
 * PACKAGES_INLINED: the packages a child loads (ws, xstate, pino, prom-client,
 * sirv) are in its bundle, not loaded from node_modules file by file. Node's
 * module loader resolved, read and compiled each of their files in every child
 * it started: `--help` took 0.34-0.40 s of CPU with the packages outside, 0.20-0.23
 * s with them inlined (6 alternating pairs, load ~7; docs/testing.md, "The
 * suite's CPU, 2026-12-06"). The same
 * package sources, through the same compiler. What the code loads on demand by
 * name is still loaded from node_modules at run time: the optional peers
 * (ioredis, @statelyai/inspect: src/base/optional-peer.ts, createRequire and a
 * computed import) and ws's optional native add-ons, named here so that the
 * bundle leaves them to require() as ws does.
 */
const NOT_INLINED = ['bufferutil', 'utf-8-validate'];
/** An ESM bundle of CommonJS packages needs `require` (esbuild's shim calls it for Node's built-ins). */
const REQUIRE_SHIM = "import { createRequire as __testBundleCreateRequire } from 'node:module'; const require = __testBundleCreateRequire(import.meta.url);";
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
      // The packages inlined too (PACKAGES_INLINED); require() for the CommonJS ones and for what stays outside.
      external: NOT_INLINED,
      banner: { js: REQUIRE_SHIM },
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
