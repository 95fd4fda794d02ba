// R21: maxConnections checked against the open-file limit, in the
// library, with the limit injected (openFileLimit). The CLI under a real
// lowered limit (prlimit) is in test/cli/limits.test.ts.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createSupervisor } from '../../src/server/supervisor.ts';
import { startDemoServer } from '../../src/cli/demo-server.ts';
import { FD_RESERVE, fitConnections, OpenFileLimitError, parseOpenFileLimit, readOpenFileLimit } from '../../src/server/fd-limit.ts';
import type { Logger } from '../../src/base/logger.ts';
import { pace } from '../helpers/pace.ts';
import { openClient, startSupervisor } from '../helpers/server.ts';
import { upgradeStatus } from '../helpers/cli.ts';

function recordingLogger(): { logger: Logger; warns: Array<{ fields: Record<string, unknown>; msg: string }> } {
  const warns: Array<{ fields: Record<string, unknown>; msg: string }> = [];
  const noop = (): void => undefined;
  const logger: Logger = { debug: noop, info: noop, error: noop, warn: (fields, msg = '') => void warns.push({ fields: fields as Record<string, unknown>, msg }), child: () => logger };
  return { logger, warns };
}

describe('the open-file limit', () => {
  test('parseOpenFileLimit reads the soft "Max open files" of /proc/self/limits; unlimited or absent is null', () => {
    const text = [
      'Limit                     Soft Limit           Hard Limit           Units     ',
      'Max processes             62811                62811                processes ',
      'Max open files            1024                 524288               files     ',
      'Max locked memory         8388608              8388608              bytes     ',
    ].join('\n');
    assert.equal(parseOpenFileLimit(text), 1024, 'the soft limit, not the hard one');
    assert.equal(parseOpenFileLimit(text.replace('1024  ', 'unlimited')), null);
    assert.equal(parseOpenFileLimit('nothing here'), null);
    if (process.platform === 'linux') assert.ok((readOpenFileLimit() ?? 0) > 0, 'read on Linux');
  });

  test('fitConnections: fits, refuses an explicit value with the numbers, lowers the default with a warning', () => {
    assert.deepEqual(fitConnections({ maxConnections: 10_000, explicit: false, headroom: 1024, limit: 20_000 }), { maxConnections: 10_000, headroom: 1024, warning: null });
    assert.deepEqual(fitConnections({ maxConnections: 10_000, explicit: true, headroom: 0, limit: null }), { maxConnections: 10_000, headroom: 0, warning: null }, 'unknown limit: unchecked');
    assert.throws(
      () => fitConnections({ maxConnections: 19_990, explicit: true, headroom: 1024, limit: 20_000 }),
      (err: Error) =>
        err instanceof OpenFileLimitError &&
        err.message ===
          `ws-supervisor: maxConnections 19990 needs 19990 + 1024 (HTTP headroom) + ${FD_RESERVE} (the process's own) = ${19_990 + 1024 + FD_RESERVE} file descriptors, ` +
            `but the open-file limit (ulimit -n) is 20000: use maxConnections ${20_000 - 1024 - FD_RESERVE} or less, or raise the limit`,
    );
    const lowered = fitConnections({ maxConnections: 10_000, explicit: false, headroom: 1024, limit: 1024 });
    const available = 1024 - FD_RESERVE;
    assert.equal(lowered.headroom, Math.floor(available / 4));
    assert.equal(lowered.maxConnections, available - lowered.headroom);
    assert.match(lowered.warning!, new RegExp(`open-file limit \\(ulimit -n\\) is 1024: the default maxConnections 10000 would need ${10_000 + 1024 + FD_RESERVE} .*lowered to ${lowered.maxConnections} with ${lowered.headroom} for HTTP`));
    assert.throws(() => fitConnections({ maxConnections: 10, explicit: false, headroom: 0, limit: FD_RESERVE }), /below the 64 descriptors/);
  });

  test('createSupervisor: an explicit maxConnections beyond the limit throws; the default is lowered with a logged warning; null skips the check', () => {
    assert.throws(() => createSupervisor({ maxConnections: 19_990, openFileLimit: 20_000 }), (err: Error) => err instanceof RangeError && /maxConnections 19990 needs 19990 \+ 64 .* = 20054 file descriptors, but the open-file limit \(ulimit -n\) is 20000: use maxConnections 19936 or less/.test(err.message));
    assert.throws(() => createSupervisor({ openFileLimit: 0 }), /option openFileLimit must be a positive integer/);
    const { logger, warns } = recordingLogger();
    const lowered = createSupervisor({ openFileLimit: 1000, logger });
    assert.equal(lowered.options.maxConnections, 1000 - FD_RESERVE);
    assert.equal(warns.length, 1);
    assert.match(warns[0]!.msg, /open-file limit \(ulimit -n\) is 1000: the default maxConnections 10000 would need 10064 file descriptors .*lowered to 936/);
    assert.equal(createSupervisor({ maxConnections: 50_000, openFileLimit: null }).options.maxConnections, 50_000);
    void lowered.close();
  });

  test('startDemoServer counts its HTTP headroom: an explicit maxConnections + httpHeadroom beyond the limit throws before listening', async () => {
    await assert.rejects(
      startDemoServer({ host: '127.0.0.1', port: 0, maxConnections: 19_000, openFileLimit: 20_000 }),
      (err: Error) => err instanceof OpenFileLimitError && /19000 \+ 1024 \(HTTP headroom\) \+ 64/.test(err.message),
    );
  });

  test('lowered to fit: at saturation the next upgrade gets 503 (real sockets)', { timeout: pace.scaled(20_000) }, async (t) => {
    const { logger } = recordingLogger();
    const ts = await startSupervisor({ openFileLimit: FD_RESERVE + 5, logger });
    t.after(() => ts.close());
    assert.equal(ts.supervisor.options.maxConnections, 5);
    const clients = await Promise.all(Array.from({ length: 5 }, () => openClient(ts.url)));
    t.after(() => clients.forEach((c) => c.terminate()));
    const refused = await upgradeStatus(ts.url);
    assert.equal(refused.status, 503);
    assert.match(refused.body, /too many connections \(limit 5\)/);
  });
});
