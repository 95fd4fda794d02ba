/**
 * Optional peer dependencies (package.json `peerDependenciesMeta`): packages
 * only one feature needs (`ioredis` for `ws-supervisor/redis`,
 * `@statelyai/inspect` for `--inspect`), so an application that does not use
 * the feature does not install them. They are loaded here, on first use, and a
 * missing one is reported by name with the command that installs it, instead
 * of Node's "Cannot find package" from deep inside dist/.
 */
import { createRequire } from 'node:module';

/** Thrown when a feature's optional peer dependency is not installed. */
export class MissingPeerError extends Error {
  static {
    // On the prototype, not as a field: the stack (what Node prints) is written in super(), before fields.
    this.prototype.name = 'MissingPeerError';
  }
  constructor(
    /** The package to install, e.g. `ioredis`. */
    readonly packageName: string,
    /** What needs it, e.g. `ws-supervisor/redis`. */
    readonly feature: string,
    options?: { cause: unknown },
  ) {
    super(`ws-supervisor: ${feature} needs ${packageName}; install it with npm install ${packageName}`, options);
  }
}

/**
 * True if `err` says that `name` itself could not be found, not a module that
 * `name` imports (a broken install of the peer is reported as it is).
 */
function isMissing(err: unknown, name: string): boolean {
  const e = err as { code?: unknown; message?: unknown } | null;
  if (e?.code !== 'ERR_MODULE_NOT_FOUND' && e?.code !== 'MODULE_NOT_FOUND') return false;
  const first = String(e.message).split('\n')[0] ?? '';
  return first.includes(`'${name}'`) || first.includes(`'${name}/`);
}

/** `require(name)` for a CommonJS peer, resolved from this package's location. */
export function requirePeer<T>(name: string, feature: string): T {
  try {
    return createRequire(import.meta.url)(name) as T;
  } catch (err) {
    if (isMissing(err, name)) throw new MissingPeerError(name, feature, { cause: err });
    throw err;
  }
}

/** `import(specifier)` of an ESM peer (`specifier` may be a subpath: `@statelyai/inspect/server`). */
export async function importPeer<T>(specifier: string, packageName: string, feature: string): Promise<T> {
  try {
    return (await import(specifier)) as T;
  } catch (err) {
    if (isMissing(err, packageName)) throw new MissingPeerError(packageName, feature, { cause: err });
    throw err;
  }
}
