/**
 * Admission at upgrade (R19–R21): every refusal is an HTTP response with a
 * status and a one-line reason, written before the WebSocket handshake.
 */
import { STATUS_CODES, type IncomingMessage } from 'node:http';
import { isIP } from 'node:net';
import type { Duplex } from 'node:stream';
import { normaliseAddress, type OriginPolicy, type TrustProxy } from './options.ts';

/** Throw from `authenticate` (or anywhere in admission) to refuse with a specific status. */
export class AdmissionError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
    this.name = 'AdmissionError';
  }
}

/** Why an upgrade was refused; also the `reason` label of refusal metrics. */
export type RefusalReason =
  | 'path'
  | 'origin'
  | 'subprotocol'
  | 'max-connections'
  | 'draining'
  | 'unauthenticated'
  | 'auth-rejected'
  | 'auth-error'
  | 'bad-request'
  /** maxConnectionsPerAddress reached for the client's address (429). */
  | 'per-address';

export interface Refusal {
  status: number;
  reason: RefusalReason;
  message: string;
  /** Response headers the status calls for (405: `Allow`; a version mismatch: `Sec-WebSocket-Version`). */
  headers?: Record<string, string>;
}

/** A Sec-WebSocket-Key: 16 bytes in base64 (RFC 6455 §4.1), as `ws` checks it. */
const KEY_PATTERN = /^[+/0-9A-Za-z]{22}==$/;

/**
 * R15: the handshake itself (RFC 6455 §4.1), checked as `ws` would before
 * anything else of admission runs (origin, limits, `authenticate`), so that a
 * request that cannot be upgraded is refused as every other refusal is: plain
 * text naming the fault, counted and logged (`ws` would answer it itself, in
 * HTML, uncounted and unlogged, and only after `authenticate` had run).
 * Versions 13 and 8 are accepted, as `ws` does.
 */
export function checkHandshake(request: IncomingMessage): Refusal | null {
  if (request.method !== 'GET') {
    return { status: 405, reason: 'bad-request', message: `a WebSocket upgrade must be a GET request, got ${truncate(request.method ?? '?')}`, headers: { Allow: 'GET' } };
  }
  const upgrade = request.headers.upgrade;
  if (upgrade === undefined || upgrade.toLowerCase() !== 'websocket') {
    return { status: 400, reason: 'bad-request', message: `the Upgrade header must be websocket, got ${upgrade === undefined ? 'none' : JSON.stringify(truncate(upgrade))}` };
  }
  const key = request.headers['sec-websocket-key'];
  if (key === undefined || !KEY_PATTERN.test(key)) {
    return { status: 400, reason: 'bad-request', message: `Sec-WebSocket-Key must be 16 bytes in base64 (24 characters), got ${key === undefined ? 'none' : `${key.length} characters`}` };
  }
  const version = request.headers['sec-websocket-version'];
  if (version !== '13' && version !== '8') {
    return {
      status: 400,
      reason: 'bad-request',
      message: `Sec-WebSocket-Version must be 13 (or 8), got ${version === undefined ? 'none' : JSON.stringify(truncate(version))}`,
      headers: { 'Sec-WebSocket-Version': '13, 8' },
    };
  }
  return null;
}

/**
 * R19. Same-origin means the Origin's host:port equals the Host header, as
 * gorilla's checkSameOrigin does (the scheme is not compared: TLS may end at a
 * proxy). No Origin at all is a non-browser client and is accepted.
 */
export function checkOrigin(request: IncomingMessage, policy: OriginPolicy): Refusal | null {
  const origin = request.headers.origin;
  if (origin === undefined || policy === '*') return null;
  let parsed: URL | null = null;
  try {
    parsed = new URL(origin);
  } catch {
    parsed = null;
  }
  if (parsed && parsed.origin !== 'null') {
    if (policy === 'same-origin') {
      const host = request.headers.host;
      if (host !== undefined && parsed.host.toLowerCase() === hostWithDefaultPort(host, parsed.protocol)) return null;
    } else if (policy.includes(parsed.origin)) {
      return null;
    }
  }
  const allowed = policy === 'same-origin' ? `same origin as ${request.headers.host ?? '(no Host)'}` : policy.join(', ');
  return { status: 403, reason: 'origin', message: `origin ${truncate(origin)} is not allowed (allowed: ${allowed})` };
}

/** Normalises a Host header the way URL#host does (lower case, default port dropped). */
function hostWithDefaultPort(host: string, protocol: string): string {
  try {
    return new URL(`${protocol}//${host}`).host.toLowerCase();
  } catch {
    return host.toLowerCase();
  }
}

/** R20: picks our most preferred protocol that the client offered; a mismatch is a refusal. */
export function negotiateProtocol(
  offered: ReadonlySet<string>,
  supported: readonly string[],
  required: boolean,
): { protocol: string } | Refusal {
  if (offered.size === 0) {
    if (required && supported.length > 0) {
      return {
        status: 400,
        reason: 'subprotocol',
        message: `a subprotocol is required (supported: ${supported.join(', ')})`,
      };
    }
    return { protocol: '' };
  }
  for (const p of supported) if (offered.has(p)) return { protocol: p };
  return {
    status: 400,
    reason: 'subprotocol',
    message: `none of the requested subprotocols (${truncate([...offered].join(', '))}) is supported${
      supported.length ? ` (supported: ${supported.join(', ')})` : ' (this server speaks none)'
    }`,
  };
}

/** Parses Sec-WebSocket-Protocol as RFC 6455 tokens; null if malformed. */
export function parseProtocols(header: string | undefined): Set<string> | null {
  const out = new Set<string>();
  if (header === undefined || header.trim() === '') return out;
  for (const part of header.split(',')) {
    const token = part.trim();
    if (!/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/.test(token) || out.has(token)) return null;
    out.add(token);
  }
  return out;
}

/** Writes a plain-text HTTP refusal on a raw upgrade socket and closes it. */
export function refuseUpgrade(socket: Duplex, refusal: { status: number; message: string }, extraHeaders: Record<string, string> = {}): void {
  if (socket.destroyed || !socket.writable) {
    socket.destroy();
    return;
  }
  const body = `${refusal.message}\n`;
  const headers = {
    Connection: 'close',
    'Content-Type': 'text/plain; charset=utf-8',
    'Content-Length': String(Buffer.byteLength(body)),
    ...extraHeaders,
  };
  // As ws's abortHandshake: no lingering half-open socket after the reply.
  socket.once('finish', () => socket.destroy());
  socket.end(
    `HTTP/1.1 ${refusal.status} ${STATUS_CODES[refusal.status] ?? 'Error'}\r\n` +
      Object.entries(headers)
        .map(([k, v]) => `${k}: ${v}\r\n`)
        .join('') +
      `\r\n${body}`,
  );
}

// --- Per-address limits (R21) ---------------------------------------------

/** An address as counted and compared (options.ts: one key per address however it is written). */
export { normaliseAddress };

/** True when the TCP peer is a proxy the operator trusts. */
export function isTrustedProxy(peer: string, trust: TrustProxy): boolean {
  if (trust === true) return true;
  if (trust === false) return false;
  return trust.includes(peer);
}

/**
 * The client address of an upgrade request: the TCP peer's, or, when that
 * peer is a trusted proxy, the rightmost entry of X-Forwarded-For (the one
 * that proxy appended; entries to its left were sent by the client and may be
 * forged). A missing or malformed entry leaves the peer's address.
 */
export function clientAddress(request: IncomingMessage, trust: TrustProxy): string {
  const peer = normaliseAddress(request.socket.remoteAddress);
  if (!isTrustedProxy(peer, trust)) return peer;
  const header = request.headers['x-forwarded-for'];
  if (typeof header !== 'string') return peer;
  const last = header.slice(header.lastIndexOf(',') + 1).trim();
  // Bare address, [v6]:port or v4:port.
  const m = /^\[([^\]]+)\](?::\d+)?$/.exec(last) ?? /^([0-9.]+):\d+$/.exec(last);
  const address = m ? m[1]! : last;
  return isIP(address) ? normaliseAddress(address) : peer;
}

/** How many sockets each address holds; an address at zero is forgotten (R3). */
export class AddressCounts {
  private readonly counts = new Map<string, number>();

  get(address: string): number {
    return this.counts.get(address) ?? 0;
  }

  add(address: string): void {
    this.counts.set(address, this.get(address) + 1);
  }

  remove(address: string): void {
    const n = this.get(address) - 1;
    if (n > 0) this.counts.set(address, n);
    else this.counts.delete(address);
  }

  /** Addresses holding at least one socket. */
  get size(): number {
    return this.counts.size;
  }
}

/** A peer's text in a refusal's reason or log line, cut to `max` characters: the peer must not choose how long our lines are. */
export function truncate(s: string, max = 80): string {
  return s.length > max ? `${s.slice(0, max - 3)}...` : s;
}
