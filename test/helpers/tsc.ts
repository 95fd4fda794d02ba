/**
 * The native TypeScript compiler (TypeScript 7), to be started directly. typescript's `bin/tsc` is a
 * Node script that finds this executable and, on Node 20 (no `process.execve`), runs it as a child
 * and waits for it: a Node start (~0.15-0.2 s of CPU here, measured with /usr/bin/time: 0.18 s for
 * `tsc --version` through the script, 0.00 s for the executable) that checks nothing. The path comes
 * from the script's own function (typescript/lib/getExePath.js), so it is the compiler `npx tsc` runs.
 */
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));
const { default: getExePath } = (await import(pathToFileURL(join(REPO_ROOT, 'node_modules', 'typescript', 'lib', 'getExePath.js')).href)) as {
  default: () => string;
};

/** The absolute path of the native `tsc` executable that node_modules/.bin/tsc runs. */
export const TSC: string = getExePath();
