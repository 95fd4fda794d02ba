// A lean library: an application that imports `ws-supervisor` loads ws, xstate and
// prom-client, and nothing that only a feature needs — not elkjs (the dashboard's diagram is
// laid out at build time), not ioredis (`ws-supervisor/redis` only), not @statelyai/inspect
// (`--inspect` only), not pino or sirv (the CLI only). Checked on the sources here (compiled file
// for file to JavaScript, below), in a child process with resolve recorders
// (test/helpers/loaded-packages.ts); test/pack.test.ts checks the same on the packed tarball as a
// user installs it.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import { dependencyClosure, loadedPackages, packageOfSpecifier, type LoadedPackages } from './helpers/loaded-packages.ts';

// Not test/helpers/cli.ts's REPO_ROOT: importing that module measures the pace (test/helpers/pace.ts,
// ~0.15 s of busy loop), and nothing here is timed by it.
const REPO_ROOT = fileURLToPath(new URL('../', import.meta.url));

const manifest = JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as {
  dependencies: Record<string, string>;
  peerDependencies: Record<string, string>;
  peerDependenciesMeta: Record<string, { optional?: boolean }>;
  devDependencies: Record<string, string>;
};

/** What the library entry may load by name, and what only features may. */
const LIBRARY = ['ws', 'xstate', 'prom-client'];
const FEATURE_ONLY = ['elkjs', 'ioredis', '@statelyai/inspect', 'superjson', 'partysocket', 'pino', 'sirv'];
/**
 * The sources, compiled file for file to JavaScript (esbuild, tsx's compiler: each .ts file its own
 * .js file, every import left as written, relative ones pointing at the .js), under test/.build/ so
 * that packages resolve from the repository's node_modules as they do from src/. The children then
 * import plain JavaScript: no tsx in each of the four (a tsx start took ~0.45 s of CPU more than a
 * plain Node start here, measured with /usr/bin/time), and no toolchain package among what they load
 * (tsx's own packages were set aside before; now nothing is). The module graph is the sources' own,
 * file for file, so a package imported by one file, statically or on demand, is seen as before.
 */
let compiled = '';
before(async () => {
  mkdirSync(join(REPO_ROOT, 'test', '.build'), { recursive: true });
  compiled = mkdtempSync(join(REPO_ROOT, 'test', '.build', `package-${process.pid}-`));
  await build({
    entryPoints: [...sources('src'), ...sources('machines')].map((f) => join(REPO_ROOT, f)),
    outdir: compiled,
    outbase: REPO_ROOT,
    bundle: true, // only to reach onResolve: every import is external, so each output is its one input
    format: 'esm',
    platform: 'node',
    target: 'node20',
    logLevel: 'error',
    plugins: [{
      name: 'file-for-file',
      setup(b) {
        b.onResolve({ filter: /.*/ }, (args) => (args.kind === 'entry-point' ? undefined : { path: args.path.replace(/^(\.{1,2}\/.*)\.ts$/, '$1.js'), external: true }));
      },
    }],
  });
});
after(() => {
  if (compiled !== '') rmSync(compiled, { recursive: true, force: true });
});

// Spawning node and importing the sources takes ~0.5–1 s here, alone; the bound is for a busy machine.
const IMPORT_TIMEOUT_MS = 60_000;

function load(entry: string): Promise<LoadedPackages> {
  return loadedPackages(join(compiled, entry.replace(/\.ts$/, '.js')), { cwd: REPO_ROOT, timeoutMs: IMPORT_TIMEOUT_MS });
}

const without = (set: Set<string>, drop: Set<string>): string[] => [...set].filter((p) => !drop.has(p)).sort();

test('package.json: only ws, xstate, prom-client (+ @types/ws) and the CLI\'s pino and sirv are dependencies; feature packages are optional peers', () => {
  assert.deepEqual(Object.keys(manifest.dependencies).sort(), ['@types/ws', 'pino', 'prom-client', 'sirv', 'ws', 'xstate']);
  assert.deepEqual(Object.keys(manifest.peerDependencies).sort(), ['@statelyai/inspect', 'ioredis']);
  for (const peer of Object.keys(manifest.peerDependencies)) {
    assert.equal(manifest.peerDependenciesMeta[peer]?.optional, true, `${peer} is an optional peer`);
    assert.ok(manifest.devDependencies[peer], `${peer} is a devDependency, for this repository's tests`);
  }
  assert.ok(manifest.devDependencies.elkjs && !manifest.dependencies.elkjs, 'elkjs is needed at build time only');
});

test("import 'ws-supervisor' (src/index.ts) loads ws, xstate, prom-client and their dependencies, nothing else", async () => {
  const loaded = await load('src/index.ts');
  // The recorder saw our own imports (not a vacuous pass): each library package by name.
  assert.deepEqual([...loaded.direct].sort(), [...LIBRARY].sort(), 'packages imported by ws-supervisor itself');
  const allowed = dependencyClosure(join(REPO_ROOT, 'node_modules'), LIBRARY);
  assert.deepEqual(without(loaded.all, allowed), [], 'packages loaded beyond ws, xstate, prom-client and their dependencies');
  for (const pkg of FEATURE_ONLY) assert.ok(!loaded.all.has(pkg), `${pkg} was loaded`);
});

test("import 'ws-supervisor/client' and 'ws-supervisor/machines' load no more than ws and xstate", async () => {
  const client = await load('src/client/node.ts');
  assert.deepEqual([...client.direct].sort(), ['ws', 'xstate']);
  assert.deepEqual(without(client.all, dependencyClosure(join(REPO_ROOT, 'node_modules'), ['ws', 'xstate'])), []);
  const machines = await load('machines/index.ts');
  assert.deepEqual([...machines.direct], ['xstate']);
  assert.deepEqual(without(machines.all, dependencyClosure(join(REPO_ROOT, 'node_modules'), ['xstate'])), []);
});

test("import 'ws-supervisor/redis' loads ioredis, and the entry's own packages (the recorder sees require() too)", async () => {
  const redis = await load('src/adapter/redis.ts');
  // ioredis is required (CommonJS, src/base/optional-peer.ts), so this also proves the require() recorder works.
  assert.ok(redis.direct.has('ioredis'), `direct: ${[...redis.direct].join(', ')}`);
  for (const pkg of ['elkjs', '@statelyai/inspect', 'pino', 'sirv']) assert.ok(!redis.all.has(pkg), `${pkg} was loaded`);
});

/** Which files may name which packages beyond the library's own (ws, xstate, prom-client). */
const MAY_NAME: { files: RegExp; packages: string[] }[] = [
  { files: /^src\/cli\//, packages: ['pino', 'sirv'] }, // the application: regular dependencies, never loaded by the library
  { files: /^src\/adapter\/redis(-session-store|-close)?\.ts$/, packages: ['ioredis'] }, // ws-supervisor/redis: the adapter and the session store
  { files: /^src\/observe\/inspector\.ts$/, packages: ['@statelyai/inspect'] },
];

function sources(dir: string): string[] {
  return readdirSync(join(REPO_ROOT, dir)).flatMap((name) => {
    const p = join(REPO_ROOT, dir, name);
    return statSync(p).isDirectory() ? sources(relative(REPO_ROOT, p)) : name.endsWith('.ts') ? [relative(REPO_ROOT, p)] : [];
  });
}

test('every package the sources name is a dependency or peer, in the one place allowed; optional peers load only through optional-peer.ts', () => {
  const declared = new Set([...Object.keys(manifest.dependencies), ...Object.keys(manifest.peerDependencies)]);
  const peers = new Set(Object.keys(manifest.peerDependencies));
  const problems: string[] = [];
  let named = 0;
  for (const file of [...sources('src'), ...sources('machines')]) {
    const text = readFileSync(join(REPO_ROOT, file), 'utf8');
    const found = [
      ...text.matchAll(/^\s*(import|export)\s+(type\s+)?[^'";]*?from\s*'([^']+)'/gm),
      ...text.matchAll(/^\s*(import)()\s*'([^']+)'/gm),
      ...text.matchAll(/()()\bimport\(\s*'([^']+)'\s*\)/g),
      ...text.matchAll(/()()\b(?:requirePeer|importPeer)<[^>]*>\(\s*'([^']+)'/g),
    ];
    for (const m of found) {
      const pkg = packageOfSpecifier(m[3]!);
      if (pkg === null) continue;
      named++;
      const allowed = LIBRARY.includes(pkg) || MAY_NAME.some((r) => r.files.test(file) && r.packages.includes(pkg));
      if (!allowed) problems.push(`${file} names ${pkg}`);
      if (!declared.has(pkg)) problems.push(`${file} names ${pkg}, which is only a devDependency (or not declared)`);
      const valueImport = (m[1] === 'import' || m[1] === 'export') && !m[2];
      if (peers.has(pkg) && valueImport) problems.push(`${file} imports the optional peer ${pkg} statically: use requirePeer/importPeer (src/base/optional-peer.ts)`);
    }
  }
  assert.ok(named >= 20, `only ${named} package imports found: the scan is broken`);
  assert.deepEqual(problems, []);
});
