/** noServer mode: the application owns the 'upgrade' event and routes to handleUpgrade itself. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { createSupervisor } from '../../src/index.ts';
import { pace } from '../helpers/pace.ts';
import { closeOf, nextMessage, openClient } from '../helpers/server.ts';

test('noServer: the app routes /ws to supervisor.handleUpgrade and answers other upgrades itself', { timeout: pace.scaled(10_000) }, async (t) => {
  const server = http.createServer((_req, res) => res.end('app'));
  const supervisor = createSupervisor({
    timing: { closeTimeout: 200 },
    onMessage: (connection, data) => connection.send(`echo ${data.toString()}`),
  });
  server.on('upgrade', (request, socket, head) => {
    if (request.url === '/ws') supervisor.handleUpgrade(request, socket, head);
    else socket.end('HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(async () => {
    await supervisor.close();
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  });
  const { port } = server.address() as AddressInfo;

  const ws = await openClient(`ws://127.0.0.1:${port}/ws`);
  const reply = nextMessage(ws);
  ws.send('hi');
  assert.equal(await reply, 'echo hi');
  assert.equal(supervisor.size, 1);
  assert.equal([...supervisor.hub][0]!.stateName, 'open');

  await assert.rejects(openClient(`ws://127.0.0.1:${port}/other`), /404/);

  const closed = closeOf(ws);
  await supervisor.close();
  assert.equal((await closed).code, 1001);
  assert.equal(supervisor.size, 0);
});
