import { connectionMachine } from '../machines/connection.machine.ts';
import { createActor, fromCallback, SimulatedClock } from 'xstate';
function walk(n: any) {
  for (const [ev, ts] of n.transitions) for (const [i, t] of ts.entries()) console.log(n.id, ev, i, t.guard ? (typeof t.guard === 'string' ? t.guard : t.guard.type ?? 'fn') : '', t.target?.map((x: any) => x.id), t.reenter);
  for (const c of Object.values(n.states)) walk(c);
}
walk(connectionMachine.root);
const log: string[] = [];
const m = connectionMachine.provide({ actors: {
  reader: fromCallback(({ receive }) => { receive((e) => log.push('r ' + e.type)); return () => log.push('r stop'); }),
  writer: fromCallback(({ receive }) => { receive((e) => log.push('w ' + JSON.stringify(e))); return () => log.push('w stop'); }),
}});
const clock = new SimulatedClock();
const a = createActor(m, { clock, input: { id: 'c1', timing: { pingInterval: 1000, pongTimeout: 500, writeTimeout: 700, closeTimeout: 300 }, io: {} }, inspect: (e) => { if (e.type === '@xstate.microstep') log.push('micro ' + e.event.type + ' ' + e._transitions.map((t) => t.source.id).join()); } });
a.start();
a.send({ type: 'socket.open' });
clock.increment(1000);
clock.increment(500);
console.log(a.getSnapshot().status, a.getSnapshot().output, log);
