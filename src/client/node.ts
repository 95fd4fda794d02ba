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
  /** Extra HTTP headers for the upgrade request (e.g. Origin, Authorization). */
  headers?: Record<string, string>;
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
      ...(options.headers ? { headers: options.headers } : {}),
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
