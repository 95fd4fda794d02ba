import { connectionMachine } from '../machines/connection.machine.ts';
import { __unsafe_getAllOwnEventDescriptors, type SnapshotFrom, type EventObject } from 'xstate';
import { TestModel } from 'xstate/graph';
type S = SnapshotFrom<typeof connectionMachine>;
const samples: Record<string, EventObject[]> = {
  'socket.pong': [{ type: 'socket.pong', rttMs: 5 } as EventObject],
  'socket.closed': [{ type: 'socket.closed', code: 1000, reason: 'bye' }, { type: 'socket.closed', code: 1006, reason: '' }] as EventObject[],
  'socket.error': [{ type: 'socket.error', code: 1007, message: 'invalid UTF-8' }] as EventObject[],
  close: [{ type: 'close', code: 1000, reason: 'done' }, { type: 'close', code: 1001, reason: 'going away' }, { type: 'close', code: 4000, reason: 'app' }, { type: 'close', code: 1006, reason: 'drop' }] as EventObject[],
  'write.overflow': [{ type: 'write.overflow', messages: 1001, bytes: 65536 }] as EventObject[],
};
const key = (s: S) => JSON.stringify({ v: s.value, r: s.context.closeRequest, c: s.context.closure });
const input = { id: 'c1', timing: { pingInterval: 1000, pongTimeout: 500, writeTimeout: 700, closeTimeout: 300 }, io: {} };
const events = (s: S) => __unsafe_getAllOwnEventDescriptors(s).flatMap((t) => samples[t] ?? [{ type: t }]);
const m1 = new TestModel(connectionMachine, { input, events: events as any, serializeState: (s, e, p) => (e && p ? `${key(s)} via ${JSON.stringify(e)} from ${key(p)}` : key(s)) });
const sp = m1.getShortestPaths();
console.log('line-graph shortest', sp.length, Object.keys(m1.getAdjacencyMap()).length, sp.reduce((a, p) => a + p.steps.length, 0));
const m2 = new TestModel(connectionMachine, { input, events: events as any, serializeState: (s) => key(s) });
console.log('plain shortest', m2.getShortestPaths().length, 'states', Object.keys(m2.getAdjacencyMap()).length);
const t0 = Date.now();
const simp = m2.getSimplePaths();
console.log('plain simple', simp.length, Date.now() - t0, 'ms', simp.reduce((a, p) => a + p.steps.length, 0));
for (const p of sp.slice(0, 5)) console.log(p.description.slice(0, 300));
