/**
 * Watch ws-supervisor's connection machines in the Stately inspector, from Node.
 *
 *   node --import tsx examples/inspect-node.ts
 *
 * Starts @statelyai/inspect's local relay on ws://localhost:8081, a supervisor
 * on http://localhost:8082 whose connection actors report to it, and one client
 * that connects, sends a few messages and closes. Open http://localhost:8081 in
 * a browser with internet access (the Stately UI loads from stately.ai), or
 * read the raw events with any WebSocket client, e.g. createWebSocketReceiver.
 */
import http from 'node:http';
import { createWebSocketInspector } from '@statelyai/inspect';
import { createInspectorServer } from '@statelyai/inspect/server';
import WebSocket from 'ws';
import { createSupervisor } from '../src/index.ts';

const relay = createInspectorServer({ port: 8081, autoOpen: false });
const inspector = createWebSocketInspector({ url: 'ws://localhost:8081' });

const server = http.createServer();
const supervisor = createSupervisor({
  server,
  timing: { pingInterval: 1000, pongTimeout: 1000 },
  inspect: inspector.inspect, // every connection actor reports its snapshots and events
  onMessage: (connection, data) => connection.send(data.toString()),
});
server.listen(8082, () => console.log('supervisor on ws://localhost:8082; inspector relay on ws://localhost:8081'));

setTimeout(() => {
  const ws = new WebSocket('ws://localhost:8082');
  ws.on('open', () => ws.send('hello'));
  // Stay long enough for a few heartbeats (open → pinging → open), then close (closing → closed).
  setTimeout(() => ws.close(1000, 'done'), 3500);
  ws.on('close', async () => {
    await supervisor.close();
    server.close();
    inspector.stop();
    relay.stop();
    setTimeout(() => process.exit(0), 200);
  });
}, 500);
