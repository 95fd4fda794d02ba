// The package as a user gets it: `npm pack`, the tarball installed into a fresh
// project, then, from that project only:
// - a strict consumer (skipLibCheck false, NodeNext, no DOM lib) type-checks against the
//   published .d.ts: every export, MessageHandler without a type argument, a typed
//   connection.auth, real ws types (not `any`); the ./browser types with DOM and no Node types;
// - `import 'ws-supervisor'` loads ws, xstate, prom-client and their dependencies only;
// - the optional peers are not installed, and asking for their features names them;
//   after `npm install ioredis`, 'ws-supervisor/redis' loads;
// - the bin serves (`ws-supervisor server`) with nothing else installed;
// - every source map in the tarball points at files that are in it.
// Slow (npm pack builds, npm install copies ~60 files): measured 50–55 s on this 2-core
// machine, also at a load average of ~30; the bound is for a busier one. The temp project is always removed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, normalize, relative, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { dependencyClosure, loadedPackages } from './helpers/loaded-packages.ts';
import { TSC } from './helpers/tsc.ts';

// Not test/helpers/cli.ts's REPO_ROOT: importing that module measures the pace (test/helpers/pace.ts,
// ~0.15 s of busy loop), and nothing here is timed by it.
const REPO_ROOT = fileURLToPath(new URL('../', import.meta.url));
const NPM = process.platform === 'win32' ? 'npm.cmd' : 'npm';
const STEP_TIMEOUT_MS = 240_000;

function run(cmd: string, args: string[], cwd: string, env: NodeJS.ProcessEnv = {}): Promise<{ stdout: string; stderr: string; code: number }> {
  return new Promise((resolve) => {
    execFile(cmd, args, { cwd, env: { ...process.env, ...env }, timeout: STEP_TIMEOUT_MS, maxBuffer: 64 << 20 }, (err, stdout, stderr) =>
      resolve({ stdout, stderr, code: err ? (typeof err.code === 'number' ? err.code : 1) : 0 }),
    );
  });
}

async function ok(cmd: string, args: string[], cwd: string): Promise<string> {
  const r = await run(cmd, args, cwd);
  assert.equal(r.code, 0, `${cmd} ${args.join(' ')} failed (${r.code}):\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

function files(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    return statSync(p).isDirectory() ? files(p) : [p];
  });
}

const du = (dir: string): number => files(dir).reduce((n, f) => n + statSync(f).size, 0);
const mb = (bytes: number): string => (bytes / 1e6).toFixed(2);

const CONSUMER = `
import http from 'node:http';
import {
  createSupervisor, createDashboard, Connection, MissingPeerError,
  type MessageHandler, type AuthenticateHook, type SupervisorOptions, type SupervisorEvents, type Logger,
} from 'ws-supervisor';
import { createClient, type ClientOptions } from 'ws-supervisor/client';
import { createRedisAdapter, type RedisAdapterOptions } from 'ws-supervisor/redis';
import { connectionMachine, clientMachine } from 'ws-supervisor/machines';
import type WebSocket from 'ws';

const server = http.createServer();

// MessageHandler, AuthenticateHook, SupervisorEvents without a type argument.
const echo: MessageHandler = (connection, data, isBinary) => void connection.send(data, isBinary);
const anyone: AuthenticateHook = () => ({});
const events: keyof SupervisorEvents = 'connection';
const plain = createSupervisor({ server, onMessage: echo, authenticate: anyone });
plain.on(events, (connection) => {
  // The socket is ws's WebSocket, not \`any\`.
  const ws: WebSocket = connection.ws;
  // @ts-expect-error ws's WebSocket has no such method: proves the ws types resolved
  ws.notAWebSocketMethod();
  // @ts-expect-error auth is unknown here, not any
  connection.auth.userId;
});

// The scaling recipe, with connection.auth typed from authenticate.
const redisOptions: RedisAdapterOptions = { url: 'redis://127.0.0.1:6379' };
const supervisor = createSupervisor({
  server,
  adapter: createRedisAdapter(redisOptions),
  async authenticate(request) {
    const token = new URL(request.url ?? '/', 'http://x').searchParams.get('token');
    return token ? { userId: token } : null;
  },
});
supervisor.on('connection', (connection) => supervisor.join(connection, \`user:\${connection.auth.userId}\`));
supervisor.on('close', (connection: Connection<{ userId: string }>) => {
  const id: string = connection.auth.userId;
  // @ts-expect-error userId is a string
  const n: number = connection.auth.userId;
  void id; void n;
});
supervisor.publish('user:42', JSON.stringify({ notice: 'hello' }));

// An explicit type argument still works.
const options: SupervisorOptions<{ role: 'admin' }> = { server, authenticate: () => ({ role: 'admin' }) };
const typed = createSupervisor(options);
typed.on('connection', (c) => { const role: 'admin' = c.auth.role; void role; });

const dashboard = createDashboard(supervisor);
const clientOptions: ClientOptions = {};
const client = createClient('ws://127.0.0.1:1/server', clientOptions);
const logger: Logger | undefined = undefined;
void dashboard; void client; void logger; void connectionMachine; void clientMachine;
void (MissingPeerError.prototype instanceof Error);
`;

const BROWSER = `
import { createClient, type ClientState } from 'ws-supervisor/browser';
const client = createClient('/server');
const state: ClientState = client.state;
void state;
`;

const TSCONFIG = (include: string[], extra: object) =>
  JSON.stringify({
    compilerOptions: {
      strict: true,
      skipLibCheck: false,
      noEmit: true,
      target: 'ES2022',
      module: 'NodeNext',
      moduleResolution: 'NodeNext',
      lib: ['ES2022'],
      ...extra,
    },
    include,
  });

test('the packed tarball, installed into a fresh project: strict types, lean loading, optional peers, bin, source maps', { timeout: 600_000 }, async (t) => {
  const work = mkdtempSync(join(tmpdir(), 'ws-supervisor-pack-'));
  t.after(() => rmSync(work, { recursive: true, force: true }));
  const started = Date.now();
  const lap = (what: string, since: number): number => {
    t.diagnostic(`${what}: ${((Date.now() - since) / 1000).toFixed(1)} s`);
    return Date.now();
  };

  // npm pack runs `prepare` (the build); lifecycle output precedes the JSON on stdout. Under
  // `npm test` the runner (scripts/run-tests.mjs) has just built dist/ with the same script and
  // says so: the pack then skips the build (`--ignore-scripts`), so that it does not delete dist/
  // under the files running beside this one.
  const built = process.env.WS_SUPERVISOR_TEST_DIST_BUILT === '1';
  let at = Date.now();
  const packOut = await ok(NPM, ['pack', '--json', '--pack-destination', work, ...(built ? ['--ignore-scripts'] : [])], REPO_ROOT);
  const pack = (JSON.parse(packOut.slice(packOut.indexOf('[') === 0 ? 0 : packOut.indexOf('\n[') + 1)) as { filename: string; size: number; unpackedSize: number; entryCount: number; files: { path: string }[] }[])[0]!;
  at = lap(built ? 'npm pack (dist/ built by the test runner)' : 'npm pack (with the build)', at);
  t.diagnostic(`tarball: ${pack.size} B packed, ${pack.unpackedSize} B unpacked, ${pack.entryCount} files`);
  const shipped = new Set(pack.files.map((f) => f.path));
  for (const f of ['LICENSE', 'README.md', 'package.json', 'dist/src/index.js', 'dist/src/index.d.ts', 'dist/src/client/browser.d.ts', 'dist/browser/ws-supervisor-client.js', 'src/index.ts', 'machines/connection.machine.ts']) {
    assert.ok(shipped.has(f), `${f} is in the tarball`);
  }
  assert.deepEqual([...shipped].filter((f) => /^(test|scripts|bench|scratch|node_modules)\//.test(f)), [], 'nothing from test/, scripts/, bench/');

  // A fresh project; the npm cache makes the install fast, the registry is the fallback.
  const app = join(work, 'app');
  mkdirSync(app);
  writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'consumer', version: '1.0.0', private: true, type: 'module' }));
  await ok(NPM, ['install', '--prefer-offline', '--no-audit', '--no-fund', '--ignore-scripts', join(work, pack.filename)], app);
  at = lap('npm install of the tarball', at);
  const nodeModules = join(app, 'node_modules');
  const lock = JSON.parse(readFileSync(join(app, 'package-lock.json'), 'utf8')) as { packages: Record<string, unknown> };
  const installed = Object.keys(lock.packages).filter((k) => k !== '');
  t.diagnostic(`install footprint: ${installed.length} packages, ${mb(du(nodeModules))} MB in node_modules`);
  for (const peer of ['ioredis', '@statelyai/inspect', 'elkjs', 'superjson', 'partysocket']) {
    assert.ok(!existsSync(join(nodeModules, peer)), `${peer} was installed, but it is optional`);
  }
  const pkgDir = join(nodeModules, 'ws-supervisor');

  // Every source map's sources are in the tarball (our own files), or, for code bundled from
  // node_modules into the browser bundle, embedded in the map (sourcesContent).
  const maps = [...shipped].filter((f) => f.endsWith('.map'));
  assert.ok(maps.length > 40, `${maps.length} maps`);
  for (const map of maps) {
    const m = JSON.parse(readFileSync(join(pkgDir, map), 'utf8')) as { sources: string[]; sourceRoot?: string; sourcesContent?: (string | null)[] };
    m.sources.forEach((source, i) => {
      const target = relative(pkgDir, normalize(join(pkgDir, dirname(map), m.sourceRoot ?? '', source))).split(sep).join('/');
      if (shipped.has(target)) return;
      assert.ok(target.startsWith('node_modules/') && typeof m.sourcesContent?.[i] === 'string', `${map}: source ${source} (${target}) is not in the tarball`);
    });
  }

  // Types: a strict Node consumer, and a browser consumer without Node's types. --singleThreaded:
  // the same check, with less CPU on this 2-core machine (TypeScript 7's checkers in parallel took
  // 1.9-2.1 s of CPU for the Node consumer, 1.1-1.2 s for the browser one; single-threaded
  // 1.3-1.4 s and 1.0-1.2 s, the same wall time or less; docs/testing.md, "Wall time").
  // One compiler process for both (`tsc -b` with the two projects: each its own program, with its
  // own lib and types, and each checked whether or not the other has errors), started directly
  // rather than through the Node script of typescript's bin (test/helpers/tsc.ts): less CPU than two `tsc -p` through
  // that script (docs/testing.md, "Wall time"). The project is fresh, so no .tsbuildinfo can make
  // -b skip a project as up to date; --verbose names each project built, and both must be named.
  writeFileSync(join(app, 'consumer.ts'), CONSUMER);
  writeFileSync(join(app, 'browser.ts'), BROWSER);
  writeFileSync(join(app, 'tsconfig.json'), TSCONFIG(['consumer.ts'], {}));
  writeFileSync(join(app, 'tsconfig.browser.json'), TSCONFIG(['browser.ts'], { lib: ['ES2022', 'DOM'], types: [] }));
  const tsc = await run(TSC, ['-b', 'tsconfig.json', 'tsconfig.browser.json', '--singleThreaded', '--verbose', '--pretty', 'false'], app);
  const tscOut = `${tsc.stdout}${tsc.stderr}`;
  // Each project's diagnostics follow its "Building project '…'" line.
  const checked = new Map(tscOut.split(/^.*Building project '/m).slice(1).map((section) => [section.slice(0, section.indexOf("'")), /error TS\d+/.test(section)] as const));
  const consumers = { 'tsconfig.json': 'the strict consumer', 'tsconfig.browser.json': 'the browser consumer' };
  for (const project of Object.keys(consumers)) assert.ok([...checked.keys()].some((p) => p.endsWith(`/${project}`) || p === project), `tsc -b did not check ${project}:\n${tscOut}`);
  const failing = Object.entries(consumers).filter(([project]) => [...checked].some(([p, errors]) => errors && (p.endsWith(`/${project}`) || p === project))).map(([, who]) => who);
  assert.equal(tsc.code, 0, `${failing.join(' and ') || 'a consumer'} ${failing.length > 1 ? 'do' : 'does'} not type-check:\n${tscOut}`);
  at = lap('tsc (two consumers, one process)', at);

  // Loading: the entry loads ws, xstate, prom-client and what they depend on, nothing else.
  const loaded = await loadedPackages('ws-supervisor', { cwd: app, timeoutMs: STEP_TIMEOUT_MS });
  assert.deepEqual([...loaded.direct].sort(), ['prom-client', 'ws', 'xstate']);
  const allowed = dependencyClosure(nodeModules, ['ws', 'xstate', 'prom-client']);
  assert.deepEqual([...loaded.all].filter((p) => !allowed.has(p)).sort(), [], 'packages loaded beyond ws, xstate, prom-client and their dependencies');

  // Optional peers, missing: the error names the package and how to install it.
  const redisMissing = await run(process.execPath, ['--input-type=module', '-e', "await import('ws-supervisor/redis')"], app);
  assert.notEqual(redisMissing.code, 0);
  assert.match(redisMissing.stderr, /MissingPeerError: ws-supervisor: the Redis adapter \(ws-supervisor\/redis, --redis\) needs ioredis; install it with npm install ioredis/);
  const bin = join(nodeModules, '.bin', 'ws-supervisor');
  const inspect = await run(bin, ['server', '--address', '127.0.0.1:0', '--inspect'], app);
  assert.equal(inspect.code, 1, `--inspect without @statelyai/inspect: ${inspect.stdout}${inspect.stderr}`);
  assert.match(inspect.stderr, /^ws-supervisor: --inspect needs @statelyai\/inspect; install it with npm install @statelyai\/inspect$/m);

  // The bin serves with nothing else installed (pino and sirv are regular dependencies).
  const server = spawn(bin, ['server', '--address', '127.0.0.1:0'], { cwd: app, stdio: ['ignore', 'pipe', 'pipe'] });
  t.after(() => server.kill('SIGKILL'));
  let out = '';
  server.stdout.on('data', (d: Buffer) => (out += String(d)));
  server.stderr.on('data', (d: Buffer) => (out += String(d)));
  const exited = new Promise<number | null>((resolve) => server.once('exit', (code) => resolve(code)));
  const listening = await Promise.race([
    new Promise<string>((resolve) => server.stdout.on('data', () => /listening on (http:\/\/\S+)/.test(out) && resolve(/listening on (http:\/\/\S+)/.exec(out)![1]!))),
    exited.then((code) => assert.fail(`ws-supervisor server exited (${code}) before listening:\n${out}`)),
  ]);
  const page = await fetch(listening);
  assert.equal(page.status, 200, `GET ${listening}`);
  await page.arrayBuffer();
  const dash = await fetch(`${listening}dashboard/diagram.svg`);
  assert.match(await dash.text(), /^<svg /, 'the dashboard serves the build-time diagram');
  server.kill('SIGTERM');
  assert.equal(await exited, 0, out);
  at = lap('runtime checks', at);

  // With the peer installed, the feature loads.
  await ok(NPM, ['install', '--prefer-offline', '--no-audit', '--no-fund', '--ignore-scripts', 'ioredis@6'], app);
  at = lap('npm install ioredis', at);
  // The same process checks that the export ./package.json resolves (one Node start fewer).
  const redisLoads = await ok(process.execPath, ['--input-type=module', '-e', [
    "import { createRequire } from 'node:module';",
    "console.log(createRequire(import.meta.url)('ws-supervisor/package.json').version);",
    "const m = await import('ws-supervisor/redis'); if (typeof m.createRedisAdapter !== 'function') process.exit(1);",
  ].join(' ')], app);
  assert.match(redisLoads.trim(), /^\d+\.\d+\.\d+/, 'ws-supervisor/package.json resolves through exports');
  lap('total', started);
});
