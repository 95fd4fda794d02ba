// Bundles test files into plain JavaScript for `node --test`, so that no test process loads tsx.
//
// Through `node --import tsx`, each test process (one per file: Node 20's runner has no other mode)
// loads tsx and its loader thread and sends every module of the file through it: measured on the
// 2-core machine, 0.45 s of CPU for tsx alone and ~0.9 s for a file that imports src/. A bundle
// (esbuild: tsx's compiler, our code inlined, packages external, as test/helpers/compiled.ts does
// for the CLI) loads as one module. One esbuild build for all the files, before the run.
//
// What must not change for the tests:
// - `import.meta.url` is each source module's own URL (an esbuild `define` per module, so a test or
//   helper resolves paths next to its .ts file as before; strings that mention it are left alone);
// - stack traces name the .ts files and lines: each bundle carries its source map inline (tsx's
//   transforms do too), and the runner starts Node with --enable-source-maps;
// - packages load from node_modules as before (external), so a test sees the same package copies;
// - the bundles sit under test/.build/ (ignored by git), inside the repository, so that packages
//   resolve from its node_modules.
import { mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join, relative, resolve, sep } from 'node:path';
import { pathToFileURL } from 'node:url';
import { isBuiltin } from 'node:module';
import { build, transform } from 'esbuild';

const ROOT = resolve(new URL('..', import.meta.url).pathname);

/** Each module's `import.meta.url` as its source file's URL; TypeScript compiled as tsx would. */
const ownImportMetaUrl = {
  name: 'own-import-meta-url',
  setup(b) {
    // Our own .mjs too (scripts/): a script that runs its main part only when it is the process's
    // entry (`argv[1]` against its own import.meta.url) would otherwise see the bundle's URL, the entry,
    // and run it inside the test (scripts/build.mjs: a whole build, dist/ deleted first).
    b.onLoad({ filter: /\.([cm]?ts|mjs)$/ }, async (args) => {
      if (args.path.includes(`${sep}node_modules${sep}`)) return undefined;
      const source = readFileSync(args.path, 'utf8');
      const loader = args.path.endsWith('.mjs') ? 'js' : 'ts';
      if (!source.includes('import.meta')) return { contents: source, loader };
      // `define` replaces the expression, never text inside strings; the inline map takes the
      // lines back to the .ts file (esbuild composes input source maps into the bundle's).
      const out = await transform(source, {
        loader,
        format: 'esm',
        target: 'node20',
        sourcefile: args.path,
        sourcemap: 'inline',
        define: { 'import.meta.url': JSON.stringify(pathToFileURL(args.path).href) },
        tsconfigRaw: readFileSync(join(ROOT, 'tsconfig.json'), 'utf8'),
      });
      return { contents: out.code, loader: 'js' };
    });
  },
};

/**
 * The packages inlined into each test file's bundle; every other package stays external, loaded from
 * node_modules as before. These five are what src/ imports statically, so a test and the code under
 * test share one inlined copy of each, as they shared the one in node_modules. Node's module loader
 * resolved, read and compiled their files one by one in each of the ~76 test processes:
 * test/server/metrics.test.ts took 0.88-0.99 s of CPU with them external, 0.77-0.87 s inlined (5
 * alternating runs). Not inlined: what the code loads by name at run time (ioredis,
 * @statelyai/inspect: src/base/optional-peer.ts), which would otherwise come in a second copy beside an
 * inlined one; packages that find their own files (playwright-core, esbuild); the repository itself
 * (`ws-supervisor`, its built dist/).
 */
const INLINED = new Set(['ws', 'xstate', 'pino', 'prom-client', 'sirv']);
const packageName = (specifier) => specifier.split('/').slice(0, specifier.startsWith('@') ? 2 : 1).join('/');
const inlineOnly = {
  name: 'inline-only',
  setup(b) {
    // A package our code imports: external unless INLINED. What an inlined package imports (its own
    // dependencies) is inlined with it; Node's built-ins stay external (esbuild's platform: 'node').
    b.onResolve({ filter: /^[^./]/ }, (args) => {
      if (isBuiltin(args.path) || INLINED.has(packageName(args.path)) || args.importer.includes(`${sep}node_modules${sep}`)) return undefined;
      return { path: args.path, external: true };
    });
  },
};
/** An ESM bundle of CommonJS packages (pino, prom-client, sirv's deps) needs `require` for Node's built-ins. */
const REQUIRE_SHIM = "import { createRequire as __testBundleCreateRequire } from 'node:module'; const require = __testBundleCreateRequire(import.meta.url);";

/**
 * Bundles `files` (test file paths relative to the repository root) into `outDir` (under the
 * repository), each under its position in `files`: the third, test/a/b.test.ts, becomes
 * outDir/002/test/a/b.test.mjs. (The position kept the runner's order when `node --test`, which
 * sorts the files it is given by path, ran them; scripts/run-tests.mjs now starts each file
 * itself, and scripts/time-tests.mjs runs them one at a time.) Returns a map from each bundle's
 * path back to its test file.
 */
export async function bundleTests(files, outDir) {
  rmSync(outDir, { recursive: true, force: true });
  mkdirSync(outDir, { recursive: true });
  const width = String(files.length).length;
  const outOf = (f, i) => join(String(i).padStart(width, '0'), relative(ROOT, join(ROOT, f)).replace(/\.ts$/, ''));
  await build({
    entryPoints: files.map((f, i) => ({ in: join(ROOT, f), out: outOf(f, i) })),
    outdir: outDir,
    outExtension: { '.js': '.mjs' },
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    // What several test files share (src/, the helpers, the inlined packages) goes to shared chunks once,
    // instead of into each of the 76 bundles: all files bundled in 2.3-2.5 s instead of 4.5-4.9 s before
    // the packages were inlined (8.1-9.6 s inlined without splitting), 5 MB written instead of 27 MB.
    // Each test file still runs in its own process; its chunks are plain ES modules beside it.
    splitting: true,
    sourcemap: 'inline',
    sourcesContent: false,
    banner: { js: REQUIRE_SHIM },
    logLevel: 'error',
    plugins: [inlineOnly, ownImportMetaUrl],
  });
  return new Map(files.map((f, i) => [join(outDir, `${outOf(f, i)}.mjs`), f]));
}
