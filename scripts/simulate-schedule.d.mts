// Types of scripts/simulate-schedule.mjs (plain JavaScript), for test/run-tests.scheduler.test.ts.
export function simulateRun(o: {
  files: readonly string[];
  rule: 'fill' | 'order';
  ordered?: boolean;
  table?: ReadonlyMap<string, { wall: number; cpu: number }>;
  quiet?: readonly string[];
  needsDist?: ReadonlyMap<string, string>;
  cores?: number;
  cpuScale?: number;
  typecheck?: boolean;
  extra?: number;
  timeline?: boolean;
  staleDist?: boolean;
  jitter?: number;
  seed?: number;
}): { wall: number; idle: number; busy: number; extras: number; mean: number; max: number; lines: string[] };
