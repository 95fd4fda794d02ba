/**
 * Third-party interop clients are system binaries (Debian's python3 with
 * python3-websockets, go with golang-golang-x-net-dev, chromium), installed by
 * .ci/run. On a developer machine without them a test says so in a visible
 * `SKIPPED: …` line and skips; under CI=true a missing binary is a failure,
 * so CI can never pass by skipping the interop tests.
 */
import { accessSync, constants, existsSync } from 'node:fs';
import type { TestContext } from 'node:test';

export const IN_CI = process.env.CI === 'true';

/**
 * A prerequisite is missing: under CI=true this throws (the test fails);
 * otherwise it prints `SKIPPED: <test>: <why>` and marks the test skipped.
 * The caller returns right after (see requireBinary).
 */
export function missingPrerequisite(t: TestContext, why: string): void {
  if (IN_CI) throw new Error(`missing prerequisite (CI=true, so this fails instead of skipping): ${why}`);
  console.log(`SKIPPED: ${t.name}: ${why}`);
  t.skip(why);
}

function isExecutable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/**
 * True when the executable `path` exists and every extra check passes (each
 * returns null when fine, else why not). Otherwise skips or fails the test
 * (missingPrerequisite) and returns false: `if (!requireBinary(t, …)) return;`
 */
export function requireBinary(
  t: TestContext,
  path: string,
  install: string,
  ...checks: Array<() => string | null>
): boolean {
  if (!isExecutable(path)) {
    missingPrerequisite(t, `${path} not found or not executable (install: ${install})`);
    return false;
  }
  for (const check of checks) {
    const why = check();
    if (why !== null) {
      missingPrerequisite(t, `${why} (install: ${install})`);
      return false;
    }
  }
  return true;
}

/** A check for requireBinary: `path` must exist (a library's source, a module folder). */
export function fileExists(path: string, what: string): () => string | null {
  return () => (existsSync(path) ? null : `${what} not found at ${path}`);
}
