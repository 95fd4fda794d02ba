/**
 * The client in browsers, over the native WebSocket: the same Client class and
 * the same machines as on Node (src/client/node.ts), with the browser's
 * dialer, reader and writer (src/client/browser-actors.ts). Bundled by
 * scripts/build-browser.mjs into dist/browser/ws-supervisor-client.js, which
 * the demo server serves at /ws-supervisor-client.js:
 *
 *     import { createClient } from '/ws-supervisor-client.js';
 *     const client = createClient('/server', { appHeartbeat: true });
 *     const reply = await client.request('Eject the hot dog', 'urgent');
 *
 * Keep timing.connectTimeout well above 5 s (the default is 10 s): after a
 * run of failed connects, Chromium delays a page's next WebSocket by up to
 * 5 s (its per-renderer WebSocket throttle), and an attempt abandoned by the
 * connect timeout counts as one more failure.
 *
 * No Node imports here or below: the build fails if one sneaks in.
 */
import { clientMachine } from '../../machines/client.machine.ts';
import { connectionMachine } from '../../machines/connection.machine.ts';
import {
  browserDialer,
  browserReader,
  browserWriter,
  DEFAULT_SEND_LIMITS,
  type BrowserTransport,
  type SendLimits,
} from './browser-actors.ts';
import { assertWebSocketUrl, Client, CLIENT_DEFAULTS, type ClientOptions } from './client.ts';

export interface BrowserClientOptions extends ClientOptions {
  /**
   * R7: browsers cannot send ping frames, so by default there is no client
   * heartbeat (pingInterval 0; the server's pings still keep the connection
   * checked from its side, the browser answers them itself). true turns on an
   * application-level heartbeat, `{"requestID":-N,"command":"ping"}`, whose
   * reply (any reply with that requestID) counts as the pong: pingInterval
   * then defaults to 25000. A timing.pingInterval > 0 requires it. With
   * `session`, the heartbeat is the session's `{"session":"ping"}` control
   * frame, answered by `{"session":"pong"}` (not numbered, not kept, never
   * reaching the application's handler).
   */
  appHeartbeat?: boolean;
  /**
   * Bounds on the browser's send buffer (`bufferedAmount`, bytes): above
   * `highWaterMark` (default 1 MiB) the write timeout runs (R10); a send that
   * would take it above `maxBytes` (default 4 MiB) is refused and the
   * connection closed as a slow consumer (R11).
   */
  sendBuffer?: Partial<SendLimits>;
}

/** The client machine with the browser's actors, provided once per page. */
export const browserClientMachine = clientMachine.provide({
  actors: {
    dialer: browserDialer,
    connection: connectionMachine.provide({ actors: { reader: browserReader, writer: browserWriter } }),
  },
});

/**
 * The WebSocket URL for `url`: relative URLs resolve against the page
 * (`'/server'` → `ws://this-host/server`) and http(s) becomes ws(s); anything
 * else that is not a ws: or wss: URL throws a TypeError, as on Node, at once
 * rather than on every attempt.
 */
export function webSocketUrl(url: string): string {
  let resolved = url;
  try {
    const u = new URL(url, typeof location === 'undefined' ? undefined : location.href);
    if (u.protocol === 'http:') u.protocol = 'ws:';
    else if (u.protocol === 'https:') u.protocol = 'wss:';
    u.hash = ''; // WebSocket refuses fragments
    resolved = u.href;
  } catch {
    // not a URL even relative to the page: assertWebSocketUrl says so
  }
  assertWebSocketUrl(resolved);
  return resolved;
}

/** A reconnecting client in a browser. See ClientOptions and BrowserClientOptions for every option and default. */
export function createClient(url: string, options: BrowserClientOptions = {}): Client {
  const appHeartbeat = options.appHeartbeat === true;
  if (!appHeartbeat && (options.timing?.pingInterval ?? 0) > 0) {
    throw new RangeError('ws-supervisor client: browsers cannot send ping frames (R7): timing.pingInterval > 0 needs appHeartbeat: true');
  }
  const limits: SendLimits = { ...DEFAULT_SEND_LIMITS, ...options.sendBuffer };
  if (!(Number.isInteger(limits.highWaterMark) && limits.highWaterMark > 0 && Number.isInteger(limits.maxBytes) && limits.maxBytes >= limits.highWaterMark)) {
    throw new RangeError(`ws-supervisor client: invalid sendBuffer ${JSON.stringify(limits)}`);
  }
  return new Client(webSocketUrl(url), options, {
    machine: browserClientMachine,
    defaultPingInterval: appHeartbeat ? CLIENT_DEFAULTS.timing.pingInterval : 0,
    // With a session, the app heartbeat is the session's ping control frame (docs/sessions.md, "Frames").
    transport: (u, o, hooks): BrowserTransport => ({ url: u, protocols: o.protocols ?? [], hooks, limits, session: o.session !== undefined && o.session !== false }),
  });
}

export { Client, ClientError, CLIENT_DEFAULTS } from './client.ts';
export type { ClientOptions, ClientState, ClientEvents, Reply, Push, SessionClientOptions, ResumeEvent } from './client.ts';
export type { ClientOutput, ClientTiming } from '../../machines/client.machine.ts';
export type { Closure, CloseCause } from '../../machines/close-codes.ts';
export type { BackoffOptions } from '../../machines/backoff.ts';
export type { SendLimits } from './browser-actors.ts';
