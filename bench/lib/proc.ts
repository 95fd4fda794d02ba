/**
 * Another local process, read from /proc (Linux): its CPU time and its
 * children. For the benchmarks and the tests that measure a server's CPU
 * (bench/scenarios/reconnect.ts, bench/lib/redis-probe.ts,
 * test/cli/sessions-redis.test.ts).
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

/** utime + stime of a process, µs (USER_HZ 100); 0 once it is gone. */
export function procCpuUs(pid: number): number {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return ((Number(fields[11]) + Number(fields[12])) / 100) * 1e6;
  } catch {
    return 0;
  }
}

/** Whether a process is running: not gone, and not a zombie (exited, not yet reaped by its parent). */
function alive(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]![0] !== 'Z';
  } catch {
    return false;
  }
}

/** The pids of a process's live children (pgrep -P, without zombies); none once it is gone. */
export function childrenOf(pid: number): number[] {
  try {
    return execFileSync('pgrep', ['-P', String(pid)], { encoding: 'utf8' }).trim().split('\n').filter(Boolean).map(Number).filter(alive);
  } catch {
    return [];
  }
}
