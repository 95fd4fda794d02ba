/**
 * machines/close-codes.ts: capCloseReason, the one cut of a close reason to
 * the 123 bytes of UTF-8 a close frame allows (RFC 6455 §5.5), used by the
 * server's and the client's session protocol violations (R15, close 1002).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { capCloseReason, MAX_CLOSE_REASON_BYTES } from '../../machines/close-codes.ts';

const bytes = (s: string): number => Buffer.byteLength(s);

test('capCloseReason: a reason that fits is returned as it is, up to exactly 123 bytes', () => {
  assert.equal(capCloseReason('session protocol: seq 3 after 1'), 'session protocol: seq 3 after 1');
  const exact = 'x'.repeat(MAX_CLOSE_REASON_BYTES);
  assert.equal(capCloseReason(exact), exact);
});

test('capCloseReason: a longer one is cut to at most 123 bytes with … at the end, never inside a character', () => {
  for (const unit of ['x', 'é', '€', '😀']) {
    for (let n = 40; n < 200; n += 7) {
      const reason = unit.repeat(n);
      const out = capCloseReason(reason);
      if (bytes(reason) <= MAX_CLOSE_REASON_BYTES) {
        assert.equal(out, reason);
        continue;
      }
      assert.ok(bytes(out) <= MAX_CLOSE_REASON_BYTES, `${bytes(out)} bytes for ${n} × ${unit}`);
      assert.ok(out.endsWith('…'));
      const kept = out.slice(0, -1);
      assert.ok(reason.startsWith(kept), 'a prefix of the reason');
      assert.equal(kept.length % unit.length, 0, 'cut at a character (no lone surrogate)');
      assert.ok(bytes(kept) > MAX_CLOSE_REASON_BYTES - 3 - Buffer.byteLength(unit), 'as much as fits');
    }
  }
});
