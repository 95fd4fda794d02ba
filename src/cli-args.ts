/**
 * Flag parsing for the CLI, kept apart from src/cli.ts (which runs on import)
 * so it can be tested. Bad values are UsageErrors: the CLI prints them and exits 2.
 */
import { parseArgs } from 'node:util';
import { existsSync, statSync } from 'node:fs';
import { DEFAULTS, normaliseOrigin, type OriginPolicy } from './options.ts';
import { bundledWww, type DemoServerOptions } from './demo-server.ts';

export const USAGE = `Usage: ws-supervisor server [flags]

Runs a WebSocket server that speaks the articles' JSON protocol on --path,
with /healthz, /metrics and a demo page at /.

Flags:
  --address HOST:PORT       listen address (default localhost:8080; port 0 = any free port)
  --path PATH               WebSocket endpoint (default /server)
  --www DIR                 static files for / (default: the bundled www/)
  --ping-interval MS        idle time between heartbeat pings (default ${DEFAULTS.pingInterval})
  --pong-timeout MS         time a ping may go unanswered (default ${DEFAULTS.pongTimeout})
  --write-timeout MS        time the socket may stay undrained (default ${DEFAULTS.writeTimeout})
  --close-timeout MS        time to wait for the peer's close frame (default ${DEFAULTS.closeTimeout})
  --max-payload BYTES       largest inbound message; bigger closes 1009 (default ${DEFAULTS.maxPayload})
  --send-queue N            messages not yet handed to the OS socket, per connection (default ${DEFAULTS.sendQueueMessages})
  --max-connections N       upgrades beyond this get 503 (default ${DEFAULTS.maxConnections})
  --allowed-origins LIST    comma-separated scheme://host[:port] origins allowed instead of
                            the same-origin rule; * allows every origin (development only)
  --help                    show this help

Signals: SIGTERM or SIGINT drains (new upgrades and /healthz get 503, every
connection gets close 1001, stragglers are terminated after the close timeout)
and exits 0.
`;

export class UsageError extends Error {}

function positive(flag: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  if (!/^[0-9]+$/.test(value) || Number(value) <= 0 || !Number.isSafeInteger(Number(value))) {
    throw new UsageError(`--${flag} must be a positive integer, got ${JSON.stringify(value)}`);
  }
  return Number(value);
}

/** HOST:PORT, [IPv6]:PORT or :PORT (all interfaces). */
export function parseAddress(value: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]*)):([0-9]{1,5})$/.exec(value);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) {
    throw new UsageError(`--address must be HOST:PORT (e.g. localhost:8080, 127.0.0.1:0, [::1]:8080), got ${JSON.stringify(value)}`);
  }
  return { host: m[1] ?? (m[2] || '::'), port };
}

function parseOrigins(value: string | undefined): OriginPolicy | undefined {
  if (value === undefined) return undefined;
  const entries = value.split(',').map((s) => s.trim()).filter(Boolean);
  if (entries.length === 0) throw new UsageError('--allowed-origins must list at least one origin');
  if (entries.includes('*')) {
    if (entries.length > 1) throw new UsageError('--allowed-origins: * cannot be combined with other origins');
    return '*';
  }
  try {
    return entries.map(normaliseOrigin);
  } catch (err) {
    throw new UsageError(`--allowed-origins: ${(err as Error).message.replace('ws-supervisor: allowed origin ', '')}`);
  }
}

export function parseServerArgs(args: string[]): DemoServerOptions | 'help' {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      strict: true,
      allowPositionals: false,
      options: {
        address: { type: 'string' },
        path: { type: 'string' },
        www: { type: 'string' },
        'ping-interval': { type: 'string' },
        'pong-timeout': { type: 'string' },
        'write-timeout': { type: 'string' },
        'close-timeout': { type: 'string' },
        'max-payload': { type: 'string' },
        'send-queue': { type: 'string' },
        'max-connections': { type: 'string' },
        'allowed-origins': { type: 'string' },
        help: { type: 'boolean' },
      },
    });
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  const v = parsed.values;
  if (v.help) return 'help';
  const { host, port } = parseAddress(v.address ?? 'localhost:8080');
  const path = v.path ?? '/server';
  if (!/^\/[^\s?#]*$/.test(path)) throw new UsageError(`--path must start with / and hold no spaces, ? or #, got ${JSON.stringify(path)}`);
  const www = v.www ?? bundledWww();
  if (!existsSync(www) || !statSync(www).isDirectory()) throw new UsageError(`--www ${JSON.stringify(www)} is not a directory`);
  const origins = parseOrigins(v['allowed-origins']);
  const options: DemoServerOptions = {
    host,
    port,
    path,
    www,
    timing: {
      pingInterval: positive('ping-interval', v['ping-interval']),
      pongTimeout: positive('pong-timeout', v['pong-timeout']),
      writeTimeout: positive('write-timeout', v['write-timeout']),
      closeTimeout: positive('close-timeout', v['close-timeout']),
    },
    sendQueue: { maxMessages: positive('send-queue', v['send-queue']) },
    maxPayload: positive('max-payload', v['max-payload']),
    maxConnections: positive('max-connections', v['max-connections']),
    ...(origins !== undefined ? { origins } : {}),
  };
  return options;
}

