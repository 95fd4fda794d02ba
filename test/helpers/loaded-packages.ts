/**
 * Which npm packages does importing a module load? A child Node process imports
 * it with two recorders installed before anything else:
 * - ESM: a `module.register` resolve hook (runs in the loader thread) that
 *   appends every resolution — specifier, importer, resolved URL — to a file;
 * - CommonJS: `Module._resolveFilename` wrapped, for every `require` (the
 *   packages that CommonJS packages such as prom-client load themselves).
 * Both see resolutions, whatever the module format, so nothing loads unseen.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { tmpdir } from 'node:os';
import { join, sep } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

export interface Resolution {
  specifier: string;
  /** The importing file (path), null for the entry. */
  parent: string | null;
  /** The resolved file (path), or `node:…` for builtins. */
  resolved: string;
}

export interface LoadedPackages {
  /** Every resolution the import made. */
  resolutions: Resolution[];
  /** Packages (by name) of every file loaded from a node_modules folder, ws-supervisor itself excepted. */
  all: Set<string>;
  /** Packages that ws-supervisor's own files (here, or installed as node_modules/ws-supervisor) imported or required by name. */
  direct: Set<string>;
}

const RECORDER = `
import Module, { register } from 'node:module';
import { appendFileSync } from 'node:fs';
const log = process.env.LOADED_PACKAGES_LOG;
const hooks = \`
import { appendFileSync } from 'node:fs';
export async function resolve(specifier, context, next) {
  const r = await next(specifier, context);
  appendFileSync(\${JSON.stringify(log)}, JSON.stringify({ specifier, parent: context.parentURL ?? null, resolved: r.url }) + '\\\\n');
  return r;
}\`;
register('data:text/javascript,' + encodeURIComponent(hooks));
const resolveFilename = Module._resolveFilename;
Module._resolveFilename = function (request, parent, ...rest) {
  const resolved = resolveFilename.call(this, request, parent, ...rest);
  appendFileSync(log, JSON.stringify({ specifier: request, parent: parent?.filename ?? null, resolved }) + '\\n');
  return resolved;
};
`;

const BUILTIN = new Set(builtinModules);
const SELF = 'ws-supervisor';

/** `lodash/fp` → `lodash`, `@scope/pkg/x` → `@scope/pkg`; null for relative, absolute, `node:` and builtin specifiers. */
export function packageOfSpecifier(specifier: string): string | null {
  if (/^(\.|\/|node:|file:|data:)/.test(specifier) || BUILTIN.has(specifier.split('/')[0]!)) return null;
  const parts = specifier.split('/');
  return specifier.startsWith('@') ? parts.slice(0, 2).join('/') : parts[0]!;
}

/** The package a file belongs to: the name after its last `node_modules/`; null outside node_modules. */
export function packageOfFile(path: string): string | null {
  const i = path.lastIndexOf(`${sep}node_modules${sep}`);
  if (i === -1) return null;
  const parts = path.slice(i + `${sep}node_modules${sep}`.length).split(sep);
  return parts[0]!.startsWith('@') ? `${parts[0]}/${parts[1]}` : parts[0]!;
}

const toPath = (u: string | null): string | null => (u === null ? null : u.startsWith('file:') ? fileURLToPath(u) : u);

/**
 * Imports `entry` (a specifier or a file path) in a child `node` started in `cwd` with
 * `nodeArgs` before the recorder (e.g. `['--import', 'tsx']` to run TypeScript sources).
 */
export async function loadedPackages(entry: string, options: { cwd: string; nodeArgs?: string[]; timeoutMs: number }): Promise<LoadedPackages> {
  const dir = mkdtempSync(join(tmpdir(), 'ws-supervisor-loaded-'));
  try {
    const recorder = join(dir, 'recorder.mjs');
    const log = join(dir, 'resolutions.jsonl');
    writeFileSync(recorder, RECORDER);
    writeFileSync(log, '');
    const target = entry.startsWith('/') ? pathToFileURL(entry).href : entry;
    await new Promise<void>((resolve, reject) => {
      execFile(
        process.execPath,
        [...(options.nodeArgs ?? []), '--import', pathToFileURL(recorder).href, '--input-type=module', '-e', `await import(${JSON.stringify(target)});`],
        { cwd: options.cwd, env: { ...process.env, LOADED_PACKAGES_LOG: log }, timeout: options.timeoutMs },
        (err, _stdout, stderr) => (err ? reject(new Error(`importing ${entry} failed: ${err.message}\n${stderr}`)) : resolve()),
      );
    });
    const resolutions: Resolution[] = readFileSync(log, 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((line) => JSON.parse(line) as { specifier: string; parent: string | null; resolved: string })
      .map((r) => ({ specifier: r.specifier, parent: toPath(r.parent), resolved: toPath(r.resolved)! }));
    const all = new Set<string>();
    const direct = new Set<string>();
    for (const r of resolutions) {
      const pkg = packageOfFile(r.resolved);
      if (pkg !== null && pkg !== SELF) all.add(pkg);
      const named = packageOfSpecifier(r.specifier);
      const own = r.parent !== null && [null, SELF].includes(packageOfFile(r.parent)) && !r.parent.includes('[eval');
      if (named !== null && named !== SELF && own) direct.add(named);
    }
    return { resolutions, all, direct };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** `roots` and every package they depend on (`dependencies`, and installed optional/peer ones), as installed under `nodeModules`. */
export function dependencyClosure(nodeModules: string, roots: string[]): Set<string> {
  const seen = new Set<string>();
  const visit = (name: string): void => {
    if (seen.has(name)) return;
    let manifest: { dependencies?: Record<string, string>; optionalDependencies?: Record<string, string>; peerDependencies?: Record<string, string> };
    try {
      manifest = JSON.parse(readFileSync(join(nodeModules, name, 'package.json'), 'utf8')) as typeof manifest;
    } catch {
      return; // not installed (an optional or peer dependency nobody asked for)
    }
    seen.add(name);
    for (const dep of Object.keys({ ...manifest.dependencies, ...manifest.optionalDependencies, ...manifest.peerDependencies })) visit(dep);
  };
  for (const r of roots) visit(r);
  return seen;
}
