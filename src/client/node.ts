/**
 * The client on Node, over `ws`: the dialer opens one `ws` client per attempt,
 * and the connection child runs the same reader and writer actors as the
 * server (protocol pings with a pong timeout, R7; bounded send queue, R9).
 */
import type { Duplex } from 'node:stream';
import WebSocket, { type ClientOptions as ClientOptionsOfWs } from 'ws';
import { fromCallback } from 'xstate';
import { clientMachine, type DialerInput } from '../../machines/client.machine.ts';
import { supervisedConnectionMachine } from '../server/connection.ts';
import { isPlainObject, optionalObject, positiveInt, shown } from '../base/checks.ts';
import { DEFAULTS } from '../server/options.ts';
import type { SocketIO, WsCloseTimeout } from '../server/socket-io.ts';
import { SendQueue } from '../server/writer.ts';
import { SESSION_QUERY_PARAM } from '../protocol/session.ts';
import { assertWebSocketUrl, Client, CLIENT_DEFAULTS, type ClientOptions, type TransportHooks } from './client.ts';

export interface NodeClientOptions extends ClientOptions {
  /** Per-connection send queue limits (R9). Defaults as the server's: 256 messages, 4 MiB. */
  sendQueue?: { maxMessages?: number; maxBytes?: number };
  /** Largest inbound message, bytes (R21). Default 1 MiB. */
  maxPayload?: number;
  /** Extra HTTP headers for the upgrade request (e.g. Origin, Authorization): each value a string or a list of strings. */
  headers?: Record<string, string | string[]>;
}

/**
 * The Node-only options, refused at creation with a RangeError naming the option and the value, as the shared ones
 * are (checkClientShapes in client.ts), with the checks the server uses for the same options (src/base/checks.ts). Before, each was taken as given: `maxPayload: -1` or `'big'` reached `ws`, which reads
 * `maxPayload | 0` and applies the limit only when that is above 0, so either turned the R21 limit off;
 * `sendQueue: { maxMessages: 0 }` reached the SendQueue, which then refused every send as a slow consumer (R11);
 * `headers: 'x'` or `{ a: 1 }` went on to the upgrade request for `ws` and Node's HTTP layer to make what they could of.
 */
function checkNodeOptions(options: NodeClientOptions): void {
  positiveInt('maxPayload', options.maxPayload, DEFAULTS.maxPayload);
  optionalObject('sendQueue', options.sendQueue, 'ws-supervisor client');
  positiveInt('sendQueue.maxMessages', options.sendQueue?.maxMessages, DEFAULTS.sendQueueMessages);
  positiveInt('sendQueue.maxBytes', options.sendQueue?.maxBytes, DEFAULTS.sendQueueBytes);
  const { headers } = options;
  if (headers === undefined) return;
  if (!isPlainObject(headers)) {
    throw new RangeError(`ws-supervisor client: option headers must be an object of header names to values, got ${shown(headers)}`);
  }
  for (const [name, value] of Object.entries(headers)) {
    if (typeof value !== 'string' && !(Array.isArray(value) && value.every((v) => typeof v === 'string'))) {
      const got = Array.isArray(value) ? JSON.stringify(value) : shown(value);
      throw new RangeError(`ws-supervisor client: option headers.${name} must be a string or a list of strings, got ${got}`);
    }
  }
}

interface NodeTransport {
  url: string;
  options: NodeClientOptions;
  hooks: TransportHooks;
}

function ignore(): void {}

/**
 * The body of a 400 refusing a session upgrade for want of sessions: this
 * library's (`sessions are not enabled on this server`), or any naming the
 * parameter (`ws-session must be given once, as 1…`: a client bug, no retry
 * would fix it either).
 */
const SESSIONS_REFUSED = /sessions are not enabled|ws-session/i;

/** One attempt: resolves with the SocketIO once the upgrade succeeded; stopping it abandons the attempt. */
const nodeDialer = fromCallback<{ type: 'dialer.noop' }, DialerInput>(({ input, sendBack }) => {
  const { url, options, hooks } = input.transport as NodeTransport;
  let handedOver = false;
  let socket: Duplex | null = null;
  let ws: WebSocket;
  try {
    const wsOptions: ClientOptionsOfWs & WsCloseTimeout = {
      perMessageDeflate: false,
      maxPayload: options.maxPayload ?? DEFAULTS.maxPayload,
      // R16: ws's own wait for the server's TCP close after a handshake (default 30 s) is ours.
      closeTimeout: options.timing?.closeTimeout ?? CLIENT_DEFAULTS.timing.closeTimeout,
      // ws types header values as strings but hands them to http.request as they are, which sends a list as repeated headers.
      ...(options.headers ? { headers: options.headers as Record<string, string> } : {}),
    };
    ws = new WebSocket(url, options.protocols ?? [], wsOptions);
  } catch (err) {
    // e.g. an invalid subprotocol name: this attempt fails, visibly.
    queueMicrotask(() => sendBack({ type: 'dial.failed', message: (err as Error).message }));
    return () => undefined;
  }
  const fail = (message: string): void => {
    if (handedOver) return;
    handedOver = true; // report once
    sendBack({ type: 'dial.failed', message });
  };
  ws.on('upgrade', (response) => {
    socket = response.socket;
  });
  ws.on('unexpected-response', (_request, response) => {
    const refused = `server refused the upgrade: HTTP ${response.statusCode}`;
    if (response.statusCode !== 400 || !new URL(url).searchParams.has(SESSION_QUERY_PARAM)) {
      fail(refused);
      ws.terminate();
      return;
    }
    // A session upgrade refused 400: the body says whether for want of sessions (docs/sessions.md, "Opting in").
    // Then retrying gets the same answer: the client stops with `unsupported` instead (R22 is for failures that pass).
    let body = '';
    const decide = (): void => {
      if (handedOver) return;
      const text = body.trim().slice(0, 200);
      if (SESSIONS_REFUSED.test(text)) {
        handedOver = true;
        sendBack({ type: 'session.unsupported', message: `${refused} ${text}` });
      } else fail(text ? `${refused} ${text}` : refused);
      ws.terminate();
    };
    response.setEncoding('utf8');
    response.on('data', (chunk: string) => {
      if (body.length < 1024) body += chunk;
    });
    response.once('end', decide);
    response.once('error', decide);
    response.once('close', decide);
  });
  ws.on('error', (err) => fail(err.message));
  ws.on('close', () => fail('connection closed during the upgrade'));
  ws.once('open', () => {
    if (handedOver || !socket) return;
    handedOver = true;
    ws.removeAllListeners('close');
    ws.removeAllListeners('error');
    ws.on('error', ignore); // the reader takes over errors from here
    const io: SocketIO = {
      ws,
      socket,
      writer: new SendQueue(
        { ws, socket, deadLetter: (data) => hooks.onDeadLetter(typeof data === 'string' ? data : data.toString()) },
        {
          maxMessages: options.sendQueue?.maxMessages ?? DEFAULTS.sendQueueMessages,
          maxBytes: options.sendQueue?.maxBytes ?? DEFAULTS.sendQueueBytes,
        },
      ),
      messagesIn: 0,
      bytesIn: 0,
      onMessage: (data) => hooks.onMessage(data.toString()),
      onRtt: (ms) => hooks.onRtt(ms),
    };
    // A due session ack and the request it rides with leave in one socket write (SendQueue.batch).
    hooks.onOpen((text) => io.writer.send(text), (fn) => io.writer.batch(fn));
    sendBack({ type: 'dial.ready', io });
  });
  return () => {
    // An attempt abandoned (connect timeout, deliberate close) must not linger.
    if (ws.readyState !== WebSocket.OPEN) {
      ws.on('error', ignore);
      ws.terminate();
    }
  };
});

/** The client machine with Node's actors, provided once per process. */
export const nodeClientMachine = clientMachine.provide({
  actors: { dialer: nodeDialer, connection: supervisedConnectionMachine },
});

/** A reconnecting client on Node. See ClientOptions for every option and default. */
export function createClient(url: string, options: NodeClientOptions = {}): Client {
  assertWebSocketUrl(url);
  checkNodeOptions(options);
  return new Client(url, options, {
    machine: nodeClientMachine,
    defaultPingInterval: 25_000,
    transport: (u, _o, hooks): NodeTransport => ({ url: u, options, hooks }),
  });
}

// The same names as the browser entry (src/client/browser.ts), so that code typed against one builds against the other,
// and every type an option, an event or `ended` is declared with is importable by name.
export { Client, ClientError, CLIENT_DEFAULTS } from './client.ts';
export type { ClientOptions, ClientState, ClientEvents, Reply, Push, SessionClientOptions, ResumeEvent } from './client.ts';
export type { ClientOutput, ClientTiming } from '../../machines/client.machine.ts';
export type { Closure, CloseCause } from '../../machines/close-codes.ts';
export type { BackoffOptions } from '../../machines/backoff.ts';
