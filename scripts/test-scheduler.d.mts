// Types of scripts/test-scheduler.mjs (plain JavaScript: scripts/run-tests.mjs runs on Node without tsx),
// for test/run-tests.scheduler.test.ts.
export interface CpuTimes {
  times: { user: number; nice: number; sys: number; idle: number; irq: number };
}
export function idleBetween(before: readonly CpuTimes[], after: readonly CpuTimes[]): { ms: number; idleCores: number };
export class Admission {
  constructor(o: { base: number; cap: number; windowMs?: number; minIdleCores?: number; settleMs?: number });
  readonly base: number;
  readonly cap: number;
  sample(end: number, ms: number, idleCores: number): void;
  idleThroughout(now: number): number | null;
  admit(now: number, state: { running: number; quietRunning: boolean }): 'base' | 'extra' | null;
  started(now: number): void;
}
export const FILL_SLACK: number;
export function pickNext(
  queue: readonly string[],
  kind: 'base' | 'extra',
  o:
    | { ready(file: string): boolean; quiet(file: string): boolean; rule: 'order' }
    | {
        ready(file: string): boolean;
        quiet(file: string): boolean;
        rule?: 'fill';
        share(file: string): number;
        running: readonly string[];
        cores: number;
        base: number;
      },
): number;
export function concurrencyOf(spans: ReadonlyArray<readonly [number, number]>): { mean: number; max: number };
