/**
 * Every ```ts block of README.md and docs/*.md compiles, strictly, against the
 * package as a user imports it: `ws-supervisor`, `ws-supervisor/client`,
 * `ws-supervisor/redis`, … resolve through package.json's `exports` (each
 * entry's `types` file, read as the source it is built from), so a renamed
 * export or a changed signature breaks this test instead of the reader.
 *
 * A snippet that continues an earlier one (a `supervisor` already made) says
 * what it assumes in an HTML comment right above the fence, invisible on
 * GitHub and npm:
 *
 *   <!-- assumes:
 *   declare const supervisor: Supervisor;
 *   -->
 *
 * and the test compiles that text before the snippet. The browser bundle the
 * CLI serves at '/ws-supervisor-client.js' is the build of the package's
 * `./browser` entry, and is compiled as that.
 *
 * Express and Fastify are not dependencies of this package; while they are not
 * installed, the recipes compile against the few members they use (declared
 * below: an Express app is an http request listener, `fastify.server` is an
 * http.Server), which is exactly what the recipes rely on.
 */
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { TSC } from './helpers/tsc.ts';

const ROOT = fileURLToPath(new URL('../', import.meta.url));
export const DOCS = ['README.md', ...readdirSync(join(ROOT, 'docs')).filter((f) => f.endsWith('.md')).sort().map((f) => `docs/${f}`)];

interface Snippet {
  doc: string;
  /** 1-based line of the first code line in the doc. */
  line: number;
  prelude: string;
  code: string;
}

/** The ```ts blocks of one Markdown file, each with the `<!-- assumes: … -->` right above it. */
function snippetsOf(doc: string): Snippet[] {
  const lines = readFileSync(join(ROOT, doc), 'utf8').split('\n');
  const out: Snippet[] = [];
  for (let i = 0; i < lines.length; i++) {
    if (!/^```(ts|typescript)\s*$/.test(lines[i]!)) continue;
    const end = lines.findIndex((l, j) => j > i && /^```\s*$/.test(l));
    assert.ok(end > i, `${doc}:${i + 1}: unclosed code block`);
    let prelude = '';
    if (i > 0 && lines[i - 1]!.trim() === '-->') {
      let start = i - 1;
      while (start > 0 && !lines[start]!.startsWith('<!--')) start--;
      const head = lines[start] ?? '';
      if (/^<!-- assumes:/.test(head)) prelude = [head.replace(/^<!-- assumes:/, ''), ...lines.slice(start + 1, i - 1)].join('\n');
    }
    out.push({ doc, line: i + 2, prelude, code: lines.slice(i + 1, end).join('\n') });
    i = end;
  }
  return out;
}

/** `ws-supervisor/…` → the source file its `types` is built from (dist/X.d.ts ← X.ts). */
function exportPaths(): Record<string, string[]> {
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { name: string; exports: Record<string, unknown> };
  // The first `types` condition of an entry, however deeply nested (import/require/node …).
  const typesOf = (target: unknown): string | undefined => {
    if (typeof target !== 'object' || target === null) return undefined;
    for (const [condition, value] of Object.entries(target)) {
      const found = condition === 'types' && typeof value === 'string' ? value : typesOf(value);
      if (found !== undefined) return found;
    }
    return undefined;
  };
  const paths: Record<string, string[]> = {};
  for (const [sub, target] of Object.entries(pkg.exports)) {
    const types = typesOf(target);
    if (types === undefined || !types.endsWith('.d.ts')) continue;
    const source = types.replace(/^\.\/dist\//, './').replace(/\.d\.ts$/, '.ts');
    assert.ok(existsSync(join(ROOT, source)), `exports["${sub}"] types ${types}: no source ${source}`);
    paths[sub === '.' ? pkg.name : `${pkg.name}${sub.slice(1)}`] = [join(ROOT, source)];
  }
  // The browser bundle has no `types` of its own (yet); it is built from src/client/browser.ts.
  paths[`${pkg.name}/browser`] ??= [join(ROOT, 'src/client/browser.ts')];
  return paths;
}

const STUBS: Record<string, string> = {
  express: `declare module 'express' {
  import type { IncomingMessage, Server, ServerResponse } from 'node:http';
  interface Request extends IncomingMessage {}
  interface Response extends ServerResponse {
    set(field: string, value: string): this;
    send(body: string | Buffer): this;
  }
  interface Express {
    (req: IncomingMessage, res: ServerResponse): void;
    get(path: string, handler: (req: Request, res: Response) => unknown): Express;
    listen(port: number, callback?: () => void): Server;
  }
  function express(): Express;
  export default express;
  export type { Express, Request, Response };
}`,
  fastify: `declare module 'fastify' {
  import type { Server } from 'node:http';
  interface FastifyInstance {
    server: Server;
    addHook(name: 'onClose' | 'preClose', hook: (instance: FastifyInstance) => Promise<void>): FastifyInstance;
    listen(options: { port: number; host?: string }): Promise<string>;
    close(): Promise<void>;
  }
  function Fastify(options?: object): FastifyInstance;
  export default Fastify;
  export type { FastifyInstance };
}`,
};

const snippets = DOCS.flatMap(snippetsOf);
/** Errors per snippet file name, from one compiler run over all of them. */
const errors = new Map<string, string[]>();
let compilerOutput = '';
let compilerMs = 0;
const fileOf = (i: number): string => `snippet-${String(i).padStart(2, '0')}.mts`;

before(() => {
  const dir = mkdtempSync(join(tmpdir(), 'ws-supervisor-snippets-'));
  try {
    // Third-party imports in snippets (@statelyai/inspect, …) resolve from here as from a user's project.
    symlinkSync(join(ROOT, 'node_modules'), join(dir, 'node_modules'), 'dir');
    mkdirSync(join(dir, 'src'));
    const stubs = Object.entries(STUBS).filter(([name]) => !existsSync(join(ROOT, 'node_modules', name, 'package.json')));
    writeFileSync(join(dir, 'src/stubs.d.ts'), stubs.map(([, text]) => text).join('\n\n') + '\n');
    snippets.forEach((s, i) => {
      const code = s.code.replaceAll("'/ws-supervisor-client.js'", "'ws-supervisor/browser'");
      writeFileSync(join(dir, 'src', fileOf(i)), `${s.prelude}\n${code}\nexport {};\n`);
    });
    writeFileSync(
      join(dir, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: {
          target: 'ES2022',
          module: 'NodeNext',
          moduleResolution: 'NodeNext',
          strict: true,
          noUncheckedIndexedAccess: true,
          skipLibCheck: false,
          esModuleInterop: true,
          allowImportingTsExtensions: true,
          noEmit: true,
          types: ['node'],
          lib: ['ES2022', 'DOM'],
          paths: exportPaths(),
        },
        include: ['src'],
      }),
    );
    // The native compiler directly, not through the Node script of node_modules/.bin/tsc (test/helpers/tsc.ts).
    const tsc = TSC;
    // --singleThreaded: the same check for less CPU on a 2-core machine. TypeScript 7 checks with
    // several checkers in parallel by default: on this project 9.6-11.2 s of CPU, single-threaded
    // 5.3-6.5 s, and no slower in wall time beside the other test files (measured at load ~8;
    // docs/testing.md, "Wall time").
    const started = performance.now();
    const r = spawnSync(tsc, ['-p', join(dir, 'tsconfig.json'), '--pretty', 'false', '--singleThreaded'], { encoding: 'utf8', timeout: 120_000 });
    assert.equal(r.error, undefined, `tsc did not run: ${r.error?.message}`);
    compilerMs = Math.round(performance.now() - started);
    compilerOutput = `${r.stdout}${r.stderr}`;
    for (const line of compilerOutput.split('\n')) {
      const m = /(snippet-\d+\.mts)\((\d+),(\d+)\): (error TS\d+: .*)$/.exec(line);
      if (!m) continue;
      const list = errors.get(m[1]!) ?? [];
      list.push(`${m[2]}:${m[3]} ${m[4]}`);
      errors.set(m[1]!, list);
    }
    const attributed = [...errors.values()].reduce((n, l) => n + l.length, 0);
    const reported = (compilerOutput.match(/error TS\d+/g) ?? []).length;
    // An error elsewhere (in the package's own sources, a stub, the config) would otherwise pass unnoticed.
    assert.equal(reported, attributed, `errors outside the snippets:\n${compilerOutput}`);
    assert.ok(r.status === 0 || attributed > 0, `tsc exited ${r.status} with no snippet errors:\n${compilerOutput}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

describe('every ```ts block in README.md and docs/ compiles against the package (strict)', () => {
  test('there are snippets to check, in the README and in docs/', (t) => {
    t.diagnostic(`${snippets.length} snippets type-checked by one tsc run in ${compilerMs} ms`);
    assert.ok(snippets.some((s) => s.doc === 'README.md'));
    assert.ok(snippets.filter((s) => s.doc.startsWith('docs/')).length >= 10, `${snippets.length} snippets`);
  });
  snippets.forEach((s, i) => {
    test(`${s.doc}:${s.line - 1}`, () => {
      const preludeLines = s.prelude.split('\n').length;
      const found = (errors.get(fileOf(i)) ?? []).map((e) => {
        const [, line, rest] = /^(\d+):(.*)$/.exec(e)!;
        const n = Number(line) - preludeLines;
        return n >= 1 ? `${s.doc}:${s.line + n - 1}:${rest}` : `${s.doc}:${s.line - 1} (in its <!-- assumes -->):${rest}`;
      });
      assert.equal(found.length, 0, `\n${found.join('\n')}`);
    });
  });
});
