/**
 * Benchmark servers run as plain JavaScript, the way users run the library
 * (tsc's dist/), not through tsx: tsx compiles with esbuild's `keepNames`,
 * which gives every closure an own `name` property (~250 B more each, measured
 * with heap snapshots), so per-connection memory and GC would be charged for
 * a development loader. Each entry is bundled once per benchmark process (our
 * code inlined, packages external) into bench/.build/.
 */
import { mkdirSync, renameSync, rmSync } from 'node:fs';
import { basename, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildSync } from 'esbuild';

const BENCH_DIR = fileURLToPath(new URL('..', import.meta.url));

const built = new Map<string, string>();

/** Path of the compiled `bench/<entry>` (e.g. 'servers.ts', 'lib/lifecycle-server.ts'). */
export function compiledEntry(entry: string): string {
  let out = built.get(entry);
  if (out) return out;
  const dir = join(BENCH_DIR, '.build');
  mkdirSync(dir, { recursive: true });
  out = join(dir, basename(entry).replace(/\.ts$/, '.mjs'));
  // Written under a name of this process, then renamed (atomic on one file
  // system): two processes that build the same entry at once (the two bench
  // smoke test files run side by side under `npm test`) never let a server
  // start from a half-written bundle.
  const partial = `${out}.${process.pid}.tmp`;
  try {
    buildSync({
      entryPoints: [join(BENCH_DIR, entry)],
      outfile: partial,
      bundle: true,
      platform: 'node',
      format: 'esm',
      target: 'node20',
      packages: 'external',
      keepNames: false,
      logLevel: 'error',
    });
    renameSync(partial, out);
  } finally {
    // A build that throws (a syntax error) may have left its partial file: never a stray .tmp in bench/.build/.
    rmSync(partial, { force: true });
  }
  built.set(entry, out);
  return out;
}
