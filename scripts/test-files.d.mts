// Types of scripts/test-files.mjs (plain JavaScript, read by scripts/run-tests.mjs), for
// test/run-tests.scheduler.test.ts.
export const TYPECHECK: string;
export function norm(file: string): string;
export const SLOW_FIRST: readonly string[];
export function rank(file: string): number;
export function runOrder(files: readonly string[], o?: { typecheck?: boolean }): string[];
export const QUIET: readonly string[];
export const NEEDS_DIST: ReadonlyMap<string, 'all' | 'browser'>;
export const ALONE: ReadonlyMap<string, { wall: number; cpu: number }>;
export const DEFAULT_SHARE: number;
export function shareOf(file: string): number;
