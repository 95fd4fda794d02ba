/**
 * Prometheus metrics (prom-client), one Registry per supervisor so several
 * supervisors (or tests) in one process never collide. Names follow
 * Prometheus conventions; docs/options.md lists them.
 */
import { Counter, Gauge, Registry } from 'prom-client';

export interface SupervisorMetrics {
  registry: Registry;
  /** Connections not yet closed (admitted and open, or closing). */
  connections: Gauge;
  /** Closures by close code: the code we sent if we started, else the one received; 1006 if none. */
  closesTotal: Counter<'code'>;
  /** Upgrades refused at admission, by reason (origin, subprotocol, max-connections, …). */
  refusedTotal: Counter<'reason'>;
  /** Messages accepted for sending that never reached the OS socket (R12). */
  deadLettersTotal: Counter<'reason'>;
  /** Connections closed as slow consumers: queue overflow or write timeout (R11). */
  slowConsumerClosesTotal: Counter<'cause'>;
  /** Connections terminated because no pong arrived in time (R4). */
  heartbeatTimeoutsTotal: Counter;
}

export function createMetrics(registry: Registry = new Registry(), prefix = 'ws_supervisor_'): SupervisorMetrics {
  return {
    registry,
    connections: new Gauge({
      name: `${prefix}connections`,
      help: 'WebSocket connections not yet closed',
      registers: [registry],
    }),
    closesTotal: new Counter({
      name: `${prefix}closes_total`,
      help: 'Closed connections by close code (sent if the server started the close, else received; 1006 if no close frame)',
      labelNames: ['code'],
      registers: [registry],
    }),
    refusedTotal: new Counter({
      name: `${prefix}refused_upgrades_total`,
      help: 'Upgrade requests refused at admission, by reason',
      labelNames: ['reason'],
      registers: [registry],
    }),
    deadLettersTotal: new Counter({
      name: `${prefix}dead_letters_total`,
      help: 'Messages accepted for sending that never reached the OS socket',
      labelNames: ['reason'],
      registers: [registry],
    }),
    slowConsumerClosesTotal: new Counter({
      name: `${prefix}slow_consumer_closes_total`,
      help: 'Connections closed as slow consumers (send queue overflow or write timeout)',
      labelNames: ['cause'],
      registers: [registry],
    }),
    heartbeatTimeoutsTotal: new Counter({
      name: `${prefix}heartbeat_timeouts_total`,
      help: 'Connections terminated because no pong or other traffic arrived within the pong timeout',
      registers: [registry],
    }),
  };
}
