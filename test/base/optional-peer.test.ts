// Optional peer dependencies are loaded on first use and, when missing, named together with
// the command that installs them. A peer that is installed but broken is reported
// as it is, not as missing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { importPeer, MissingPeerError, requirePeer } from '../../src/base/optional-peer.ts';

const ABSENT = 'ws-supervisor-test-absent-peer';

test('requirePeer: a missing package throws MissingPeerError naming it and how to install it', () => {
  assert.throws(
    () => requirePeer(ABSENT, 'the frobnicator'),
    (err: unknown) =>
      err instanceof MissingPeerError &&
      err.packageName === ABSENT &&
      err.feature === 'the frobnicator' &&
      err.message === `ws-supervisor: the frobnicator needs ${ABSENT}; install it with npm install ${ABSENT}` &&
      (err.cause as { code?: string }).code === 'MODULE_NOT_FOUND',
  );
});

test('importPeer: a missing package (or subpath of one) throws MissingPeerError naming the package', async () => {
  await assert.rejects(importPeer(`${ABSENT}/server`, ABSENT, '--frob'), (err: unknown) => {
    assert.ok(err instanceof MissingPeerError);
    assert.equal(err.message, `ws-supervisor: --frob needs ${ABSENT}; install it with npm install ${ABSENT}`);
    assert.equal((err.cause as { code?: string }).code, 'ERR_MODULE_NOT_FOUND');
    return true;
  });
});

test('installed peers load: requirePeer (CommonJS) and importPeer (ESM)', async () => {
  const ioredis = requirePeer<typeof import('ioredis')>('ioredis', 'test');
  assert.equal(typeof ioredis.Redis, 'function');
  const inspect = await importPeer<typeof import('@statelyai/inspect')>('@statelyai/inspect', '@statelyai/inspect', 'test');
  assert.equal(typeof inspect.createWebSocketInspector, 'function');
});

test('a peer that is installed but cannot load its own dependency is reported as it is, not as missing', async (t) => {
  // A package whose entry imports something absent: the error must name that module, not the peer.
  const dir = mkdtempSync(join(tmpdir(), 'ws-supervisor-peer-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const pkg = join(dir, 'node_modules', 'broken-peer');
  mkdirSync(pkg, { recursive: true });
  writeFileSync(join(pkg, 'package.json'), JSON.stringify({ name: 'broken-peer', type: 'module', exports: './index.js' }));
  writeFileSync(join(pkg, 'index.js'), `import '${ABSENT}';\n`);
  const url = pathToFileURL(join(pkg, 'index.js')).href;
  await assert.rejects(importPeer(url, 'broken-peer', 'test'), (err: unknown) => {
    assert.ok(!(err instanceof MissingPeerError), String(err));
    assert.match(String((err as Error).message), new RegExp(ABSENT));
    return true;
  });
});
