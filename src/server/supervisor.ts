/**
 * The server supervisor: admits upgrades (R19–R21), runs one connection
 * machine per socket, owns the hub, and drains gracefully (R18). Broadcasts
 * and topic publishes are delivered locally first, then handed to the adapter
 * (src/adapter/) for the other nodes; remote ones arrive through it.
 */
import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { Server as TlsServer } from 'node:tls';
import { WebSocketServer, type ServerOptions } from 'ws';
import { CloseCodes, SESSIONS_UNSUPPORTED_REASON, type Closure } from '../../machines/close-codes.ts';
import {
  AddressCounts,
  AdmissionError,
  checkHandshake,
  checkOrigin,
  clientAddress,
  isTrustedProxy,
  normaliseAddress,
  negotiateProtocol,
  parseProtocols,
  refuseUpgrade,
  truncate,
  type Refusal,
} from './admission.ts';
import { createMemoryAdapter } from '../adapter/memory.ts';
import type { Adapter, AdapterDeadLetter, AdapterMessage, AdapterStatus, NodeInfo } from '../adapter/types.ts';
import { Connection, connectionRunnerConfig, type ConnectionHooks, type ConnectionRunnerConfig, type ConnectionShared, type DeadLetter } from './connection.ts';
import { Hub, type BroadcastResult } from './hub.ts';
import { SupervisorMetrics } from './metrics.ts';
import { LogSummary } from './log-summary.ts';
import { SupervisedWebSocket } from './reader.ts';
import { fitConnections, resolveOpenFileLimit } from './fd-limit.ts';
import type { Logger } from '../base/logger.ts';
import { resolveOptions, type ResolvedOptions, type SupervisorOptions } from './options.ts';
import type { WsCloseTimeout } from './socket-io.ts';
import { TurnScheduler } from './scheduler.ts';
import { validateTopic } from '../protocol/topics.ts';
import { sessionRequested } from '../protocol/session.ts';
import type { SessionDeadLetter } from '../adapter/session-store.ts';
import { resolveSessionOptions, Sessions, type SessionLifecycleEvent } from './sessions.ts';

export interface BroadcastOptions<Auth = unknown> {
  /** Send a Buffer as text (false) or a string as binary (true). Default: binary for a Buffer, text for a string. */
  binary?: boolean;
  /** Only the local connections it keeps. A predicate cannot travel, so a filtered broadcast stays on this node. */
  filter?: (connection: Connection<Auth>) => boolean;
  /** This node only: do not hand it to the adapter. Default false. */
  local?: boolean;
  /**
   * The connection on whose behalf it is sent (e.g. a peer's
   * `broadcast` request). Its fan-out cost, local recipients × bytes, is
   * charged to its budget (`budget.fanOut`); over it, nothing is sent, the
   * result has `overBudget: true` and the connection is closed 1008.
   */
  from?: Connection<Auth>;
}

export interface PublishOptions<Auth = unknown> {
  /** As for broadcast. */
  binary?: boolean;
  /** This node's members only: do not hand it to the adapter. Default false. */
  local?: boolean;
  /** As for broadcast: charged recipients (this node's members) × bytes. */
  from?: Connection<Auth>;
}

/** Live nodes and their connections, cluster-wide (each node's count as of its last heartbeat). */
export interface ClusterSize {
  nodes: number;
  connections: number;
}

export interface SupervisorEvents<Auth = unknown> {
  /** A connection passed admission and is open. */
  connection: [connection: Connection<Auth>, request: IncomingMessage];
  /** A connection reached `closed` (exactly once per connection, R2). */
  close: [connection: Connection<Auth>, closure: Closure];
  /** An accepted message never reached the OS socket (R12). */
  deadLetter: [letter: DeadLetter];
  /** An upgrade was refused at admission. */
  refused: [refusal: Refusal, request: IncomingMessage];
  /** `onMessage` or `authenticate` threw; the connection was closed 1011 / refused 500. */
  handlerError: [error: unknown, connection: Connection<Auth> | null];
  /**
   * R12: a broadcast or publish of this node that may not have reached every
   * other node (local delivery already happened; `reason`: unavailable |
   * error | partial), or messages of another node that never reached this one
   * (`reason` missed, with `from` and `count`; no content).
   */
  adapterDeadLetter: [letter: AdapterDeadLetter];
  /** The adapter went up or degraded (`reason` says why; null when up). */
  adapterStatus: [status: AdapterStatus, reason: string | null];
  /** A session was attached (new, or after a failed resume), resumed, detached, or ended for good (docs/sessions.md). */
  session: [event: SessionLifecycleEvent<Auth>];
  /** R12: messages of a session that will never reach its client (a bound, expiry, an end), with the reason. */
  sessionDeadLetter: [letter: SessionDeadLetter];
}

export class Supervisor<Auth = unknown> extends EventEmitter<SupervisorEvents<Auth>> {
  readonly options: ResolvedOptions;
  readonly hub: Hub<Auth>;
  readonly metrics: SupervisorMetrics;
  /** Fans broadcasts and publishes out to the other nodes; the in-memory one (a cluster of one) by default. */
  readonly adapter: Adapter;
  /** Sessions (docs/sessions.md): the store and the live session machines; null when the `sessions` option is absent. */
  readonly sessions: Sessions<Auth> | null;
  private readonly wss: WebSocketServer;
  /** R21: every connection's inbound work shares the event loop's turns fairly (src/server/scheduler.ts). */
  private readonly scheduler: TurnScheduler;
  private readonly negotiated = new WeakMap<IncomingMessage, string>();
  private readonly admitting = new Set<Duplex>();
  private readonly raw: SupervisorOptions<Auth>;
  private draining = false;
  private readonly logger: Logger | null;
  private shutdown: Promise<void> | null = null;
  /** Sender-side adapter dead letters, logged as the first of a burst plus a line per interval with the counts. */
  private readonly adapterLetterLog: LogSummary;
  /** Session dead letters: one line per interval during a burst (a store outage). */
  private readonly sessionLetterLog: LogSummary;

  // --- Per-address limits (R21) ---
  /** WebSocket connections (open or being admitted) by client address; released when the socket closes. */
  private readonly perAddress = new AddressCounts();
  /** Sockets on `server` that have not reached handleUpgrade, by peer address; released at the upgrade or the close. */
  private readonly pending = new AddressCounts();
  private readonly countedAs = new WeakMap<Duplex, string>();
  private readonly pendingAs = new WeakMap<Duplex, string>();
  /** Per-address refusals come in floods: the first logged, the rest summarised per interval. */
  private readonly refusalLog: LogSummary;
  /** One 'close' listener for every counted socket (`this` is the socket). */
  /**
   * The 'close' listener of a socket being admitted: it leaves `admitting`
   * and frees the address's count. Taken off just before ws takes the socket
   * (a third 'close' listener, beside Node's and ws's, turns the socket's
   * list into an array with room for 16 more: ~150 bytes per idle
   * connection); from then on the connection's end frees the count
   * (`releaseCounted`, from `onClose`), or ws's 'close' for an upgrade that
   * is not a connection.
   */
  private readonly onCountedClose = ((self: Supervisor<Auth>) =>
    function (this: Duplex): void {
      self.releaseCounted(this);
    })(this);
  private readonly onPendingClose = ((self: Supervisor<Auth>) =>
    function (this: Duplex): void {
      self.releasePending(this);
    })(this);
  /** Counts a new socket of `server` by address; beyond maxPendingPerAddress it is answered 429 and closed before any request is read. */
  private readonly onServerConnection = (socket: Socket): void => {
    const address = normaliseAddress(socket.remoteAddress);
    // A trusted proxy's sockets carry many clients: their addresses are only known from each request's X-Forwarded-For.
    if (this.draining || isTrustedProxy(address, this.options.trustProxy)) return;
    const limit = this.options.maxPendingPerAddress;
    if (this.pending.get(address) >= limit) {
      this.metrics.refusedTotal.inc({ reason: 'per-address-pending' });
      const message = `too many unfinished connections from ${address} (limit ${limit} per address)`;
      this.refusalLog.note('per-address-pending', 0, { reason: 'per-address-pending', remote: address, limit }, `socket refused with 429: ${message}`);
      socket.on('error', ignore);
      refuseUpgrade(socket, { status: 429, message }, { 'Retry-After': '5' });
      return;
    }
    this.pending.add(address);
    this.pendingAs.set(socket, address);
    socket.on('close', this.onPendingClose);
  };
  /** https: the TLS socket (the one an upgrade carries) is announced by 'secureConnection'. */
  private readonly connectionEvent: 'connection' | 'secureConnection';
  /** Connection ids: this supervisor's random prefix and a counter (unique per process, and across processes with overwhelming probability). */
  private readonly idPrefix = `${randomBytes(6).toString('base64url')}-`;
  private opened = 0;
  /** Per-connection child loggers, only when a logger is set. */
  private readonly logs = new Map<Connection<Auth>, Logger>();
  /** Shared by every connection: their machine runs share snapshots (src/server/runner.ts). */
  private readonly runnerConfig: ConnectionRunnerConfig;
  /** What all its connections share (made at the first). */
  private connectionShared: ConnectionShared<Auth> | null = null;
  /** One set of callbacks for all connections (no closures per connection). */
  private readonly hooks: ConnectionHooks<Auth> = {
    onMessage: (c, data, isBinary) => {
      const onMessage = this.raw.onMessage;
      if (!onMessage) return;
      try {
        onMessage(c, data, isBinary);
      } catch (err) {
        this.emit('handlerError', err, c);
        this.logs.get(c)?.error({ err }, 'onMessage threw: closing 1011');
        if (c.stateName === 'open' || c.stateName === 'pinging') void c.close(1011, 'internal error');
      }
    },
    onRtt: (ms) => this.metrics.rtt(ms),
    onDeadLetter: (letter) => {
      this.metrics.deadLettersTotal.inc({ reason: letter.reason });
      const log = this.logs.size > 0 ? this.logs.get(this.hub.get(letter.connectionId)!) : undefined;
      log?.warn({ reason: letter.reason, binary: letter.binary }, 'dead letter: accepted message never reached the socket');
      this.emit('deadLetter', letter);
    },
    onClose: (connection, closure) => {
      // A session connection: its session detaches in the same step as the hub lets go.
      const announced = connection.sessionBinding?.closed() ?? true;
      this.hub.unregister(connection);
      // R21: its socket is closed (or destroyed in this step: terminate, a timeout): the address's slot is free.
      this.releaseCounted(connection.socket);
      this.metrics.closed(closure);
      const log = this.logs.get(connection);
      if (log) {
        this.logs.delete(connection);
        const fields = { ...closure, stats: connection.stats, ageMs: Date.now() - connection.openedAt };
        if (closure.expected) log.info(fields, 'connection closed');
        else log.warn(fields, `connection closed unexpectedly: ${closure.cause}`);
      }
      if (announced) this.emit('close', connection, closure);
    },
  };
  private readonly onServerUpgrade = (request: IncomingMessage, socket: Duplex, head: Buffer): void => {
    this.releasePending(socket); // an upgrade of any path has left plain HTTP, ours or another listener's
    if (this.options.path !== null && pathOf(request) !== this.options.path) {
      // Another upgrade listener may own this path; answer only if we are alone.
      if (this.raw.server && this.raw.server.listenerCount('upgrade') > 1) return;
    }
    this.handleUpgrade(request, socket, head);
  };

  constructor(options: SupervisorOptions<Auth> = {}) {
    super();
    this.raw = options;
    this.options = resolveOptions(options as SupervisorOptions<unknown>);
    this.logger = options.logger ?? null;
    // R21: a maxConnections the process's descriptors cannot hold would end in resets, not 503s.
    const fit = fitConnections({
      maxConnections: this.options.maxConnections,
      explicit: options.maxConnections !== undefined,
      headroom: 0,
      limit: resolveOpenFileLimit(options.openFileLimit),
    });
    if (fit.warning !== null) {
      this.options.maxConnections = fit.maxConnections;
      if (this.logger) this.logger.warn({ maxConnections: fit.maxConnections }, fit.warning);
      else process.emitWarning(fit.warning, 'WsSupervisorWarning');
    }
    this.hub = new Hub<Auth>({ maxTopicsPerConnection: this.options.maxTopicsPerConnection, fanOutSlice: this.options.fairness.fanOutSlice });
    this.scheduler = new TurnScheduler(this.options.fairness);
    this.adapter = options.adapter ?? createMemoryAdapter();
    this.metrics = new SupervisorMetrics({
      live: () => this.hub.values(),
      closedTraffic: () => this.hub.closedTraffic,
      topics: () => this.hub.topicCount,
      adapterUp: () => this.adapter.status === 'up',
      sessions: () => this.sessions?.store.stats() ?? null,
    });
    this.sessions = options.sessions === undefined ? null : this.startSessions(options);
    this.runnerConfig = connectionRunnerConfig(this.options.timing, options.inspect);
    const wsOptions: ServerOptions & WsCloseTimeout = {
      noServer: true,
      clientTracking: false, // the hub is the registry
      perMessageDeflate: false,
      maxPayload: this.options.maxPayload,
      // R16: after a close handshake, ws waits this long for the peer's TCP
      // close before destroying the socket (its default: 30 s). The machine
      // bounds the same wait (peerClosing, closing); this is the backstop.
      closeTimeout: this.options.timing.closeTimeout,
      handleProtocols: (_offered, request) => this.negotiated.get(request) || false,
      // The reader's events without a listener per socket (memory per idle connection).
      WebSocket: SupervisedWebSocket,
    };
    this.wss = new WebSocketServer(wsOptions);
    const logger = this.logger?.child({ adapter: this.adapter.name, node: this.adapter.nodeId }) ?? null;
    this.adapterLetterLog = new LogSummary({ logger, what: 'adapter dead letters' });
    this.sessionLetterLog = new LogSummary({ logger: this.logger, what: 'session dead letters' });
    this.refusalLog = new LogSummary({ logger: this.logger, what: 'per-address refusals' });
    this.connectionEvent = options.server instanceof TlsServer ? 'secureConnection' : 'connection';
    this.adapter.attach({
      logger,
      connections: () => this.hub.size,
      deliver: (message) => this.deliverRemote(message),
      deadLetter: (letter) => {
        if (letter.reason === 'missed') {
          // Receiver side: another node's messages never arrived here and could not be recovered (their content is unknown).
          this.metrics.adapterMissedTotal.inc({ cause: letter.cause }, letter.count);
          this.adapterLetterLog.note(
            `missed (${letter.cause})`,
            0,
            { reason: letter.reason, cause: letter.cause, from: letter.from, count: letter.count, error: letter.error },
            `adapter missed: messages from another node never arrived (${letter.cause}: ${letter.error}); more are summarised every 10 s`,
          );
        } else {
          this.metrics.adapterPublishFailuresTotal.inc({ reason: letter.reason });
          // A hung Redis fails every broadcast: one line per burst and interval, not one per message.
          this.adapterLetterLog.note(
            letter.reason,
            letter.data.length,
            { reason: letter.reason, kind: letter.kind, topic: letter.topic ?? undefined, bytes: letter.data.length, error: letter.error },
            `adapter dead letter: a message may not have reached every node (${letter.reason}: ${letter.error}); more are summarised every 10 s`,
          );
        }
        this.emit('adapterDeadLetter', letter);
      },
      recovered: (_from, count) => this.metrics.adapterRecoveredTotal.inc(count),
      statusChanged: (status, reason) => {
        if (status === 'up') this.adapterLetterLog.flush(); // the outage's count, as soon as it is over
        this.emit('adapterStatus', status, reason);
      },
    });
    options.server?.on(this.connectionEvent, this.onServerConnection);
    options.server?.on('upgrade', this.onServerUpgrade); // last: a throw above leaves nothing attached
  }

  /** True from `close()` on: upgrades and health checks get 503. */
  get isDraining(): boolean {
    return this.draining;
  }

  /** Live connections (not yet closed). */
  get size(): number {
    return this.hub.size;
  }

  /**
   * R11: enqueue into every live local connection without waiting on any,
   * then hand the message to the adapter for every other node (unless
   * `local` or `filter`). Returns the local counts; cross-node failures come
   * back as 'adapterDeadLetter' events (R12).
   */
  broadcast(data: string | Buffer, options: BroadcastOptions<Auth> = {}): BroadcastResult {
    const binary = options.binary ?? typeof data !== 'string';
    const payload = typeof data === 'string' ? Buffer.from(data) : data;
    if (options.from && !options.from.charge(this.hub.size * payload.length)) return { accepted: 0, refused: 0, overBudget: true };
    const filter = options.filter;
    const sessions = this.sessions;
    if (filter === undefined) {
      const result = this.hub.broadcast(payload, { binary });
      // Every session gets it, attached or not: with a store that fans out itself, every session of the cluster,
      // in the store, once (docs/sessions.md, "Fan-out in the store"); the other nodes then leave their sessions be.
      // Named: another node writes it itself to its unpersisted sessions (no longer the store's members), once by the name.
      const reached = sessions?.broadcastSessions(payload, binary, options.local ? 'local' : 'cluster') ?? null;
      if (!options.local) this.fanOut({ kind: 'broadcast', topic: null, data: payload, binary, ...(reached !== null ? { sessionsReached: true, fanOut: reached } : {}) });
      return result;
    }
    if (sessions === null) return this.hub.broadcast(payload, { binary, filter });
    // A filter sees connections: the sessions attached here get it at the call, through the connection that carries
    // each (docs/sessions.md, "Integration"); the hub's fan-out, which may reach a connection turns later (sliced),
    // after its session moved to another connection, skips session connections. Each session once, in call order.
    const result = this.hub.broadcast(payload, { binary, filter: (c) => c.sessionBinding === null && filter(c) });
    result.accepted += sessions.broadcastFiltered(filter, payload, binary);
    return result;
  }

  /**
   * Sends to the members of `topic` on this node (R11: only enqueues), then
   * hands it to the adapter for the members on every other node (unless
   * `local`). The sender need not be a member. Returns the local counts.
   * Throws TopicError('invalid-topic') for a bad name (see validateTopic).
   */
  publish(topic: string, data: string | Buffer, options: PublishOptions<Auth> = {}): BroadcastResult {
    validateTopic(topic);
    const binary = options.binary ?? typeof data !== 'string';
    const payload = typeof data === 'string' ? Buffer.from(data) : data;
    if (options.from && !options.from.charge(this.hub.memberCount(topic) * payload.length)) return { accepted: 0, refused: 0, overBudget: true };
    const result = this.hub.publish(topic, payload, { binary });
    const reached = this.sessions?.publishSessions(topic, payload, binary, options.local ? 'local' : 'cluster') ?? null;
    if (!options.local) this.fanOut({ kind: 'publish', topic, data: payload, binary, ...(reached !== null ? { sessionsReached: true, fanOut: reached } : {}) });
    return result;
  }

  /**
   * Adds a live connection to `topic` (membership is per node: publishes from
   * every node reach it). True if it joined, false if already a member.
   * Throws TopicError: invalid-topic, too-many-topics, not-connected. The
   * membership ends with the connection (R3); on a session connection it is
   * the session's, and ends with the session (docs/sessions.md).
   */
  join(connection: Connection<Auth>, topic: string): boolean {
    // A session connection: the session joins, even when this connection has closed since (docs/sessions.md).
    if (connection.sessionBinding !== null && this.sessions !== null) return this.sessions.join(connection, topic, this.hub, this.options.maxTopicsPerConnection);
    return this.hub.join(connection, topic);
  }

  /** Removes a connection from `topic`; true if it was a member. Throws TopicError('invalid-topic') on a bad name. */
  leave(connection: Connection<Auth>, topic: string): boolean {
    if (connection.sessionBinding !== null && this.sessions !== null) return this.sessions.leave(connection, topic, this.hub);
    return this.hub.leave(connection, topic);
  }

  /** The topics a connection is in (empty once it has closed). */
  topicsOf(connection: Connection<Auth>): string[] {
    return this.hub.topicsOf(connection);
  }

  /** This node's live members of `topic`. */
  membersOf(topic: string): Connection<Auth>[] {
    return this.hub.membersOf(topic);
  }

  /** How many of this node's live connections are in `topic`. */
  memberCount(topic: string): number {
    return this.hub.memberCount(topic);
  }

  /** The live nodes of the cluster, this one included (the adapter's presence table). Rejects when it cannot tell. */
  nodes(): Promise<NodeInfo[]> {
    return this.adapter.nodes();
  }

  /** Live nodes and connections, cluster-wide. Rejects when the adapter cannot tell (e.g. Redis is down). */
  async clusterSize(): Promise<ClusterSize> {
    const nodes = await this.adapter.nodes();
    return { nodes: nodes.length, connections: nodes.reduce((sum, n) => sum + n.connections, 0) };
  }

  /**
   * The upgrade handler, for noServer mode (`server.on('upgrade', (req, socket, head) => supervisor.handleUpgrade(req, socket, head))`).
   * Never throws: every refusal is an HTTP response.
   */
  handleUpgrade(request: IncomingMessage, socket: Duplex, head: Buffer): void {
    // Until ws owns the socket, a reset must not become an unhandled 'error'.
    socket.on('error', ignore);
    this.releasePending(socket);
    const address = clientAddress(request, this.options.trustProxy);
    const refusal = this.admit(request, address);
    if (refusal) return this.refuse(request, socket, refusal);
    this.admitting.add(socket);
    // Counted until the TCP socket closes, whatever happens in between (refused later, opened, closed);
    // a client that leaves while being admitted (authenticating, or refused by ws with a 400) frees its slot at once.
    this.perAddress.add(address);
    this.countedAs.set(socket, address);
    socket.on('close', this.onCountedClose);
    void this.authenticateThenUpgrade(request, socket, head);
  }

  /** R18: stop accepting, send 1001 to all, wait up to the close timeout, terminate the rest. */
  close(): Promise<void> {
    if (this.shutdown) return this.shutdown;
    this.draining = true;
    for (const socket of this.admitting) {
      refuseUpgrade(socket, { status: 503, message: 'server is shutting down' });
    }
    this.admitting.clear();
    for (const ws of this.sessionless) ws.terminate();
    const closing: Promise<Closure>[] = [];
    for (const connection of this.hub.values()) {
      closing.push(connection.close(1001, 'server shutting down', 'shutdown'));
    }
    // R3: the adapter goes last (goodbye to the presence table, its connections and timers); sessions before it.
    this.shutdown = Promise.all(closing)
      .then(() => this.sessions?.close())
      .then(() => this.adapter.close())
      .then(() => {
        this.sessionLetterLog.close();
        this.adapterLetterLog.close();
      });
    return this.shutdown;
  }

  /** Detach from the http server (after close()); upgrades are then no longer answered. */
  detach(): void {
    this.raw.server?.off('upgrade', this.onServerUpgrade);
    this.raw.server?.off(this.connectionEvent, this.onServerConnection);
    this.refusalLog.close();
  }

  /** A socket counted as pending reached the upgrade (or closed): it no longer counts. */
  private releasePending(socket: Duplex): void {
    const address = this.pendingAs.get(socket);
    if (address === undefined) return;
    this.pendingAs.delete(socket);
    this.pending.remove(address);
    socket.off('close', this.onPendingClose);
  }

  private fanOut(message: AdapterMessage): void {
    this.metrics.adapterMessagesTotal.inc({ direction: 'out', kind: message.kind });
    this.adapter.publish(message);
  }

  /** Another node's broadcast or publish: local delivery only (never handed back to the adapter). */
  private deliverRemote(message: AdapterMessage): void {
    this.metrics.adapterMessagesTotal.inc({ direction: 'in', kind: message.kind });
    // Its sessions were reached in the sender's store already (every session of the cluster, once): only the
    // connections without a session here, and the sessions here the store no longer reaches (unpersisted: written
    // here, once by the fan-out's name). Otherwise (a sender without such a store), the sessions this node runs.
    if (message.kind === 'broadcast') {
      this.hub.broadcast(message.data, { binary: message.binary });
      if (!message.sessionsReached) this.sessions?.broadcastSessions(message.data, message.binary, 'local');
      else this.sessions?.fanOutCopy(message.fanOut ?? null, null, message.data, message.binary);
    } else if (message.topic !== null) {
      this.hub.publish(message.topic, message.data, { binary: message.binary });
      if (!message.sessionsReached) this.sessions?.publishSessions(message.topic, message.data, message.binary, 'local');
      else this.sessions?.fanOutCopy(message.fanOut ?? null, message.topic, message.data, message.binary);
    }
  }

  private admit(request: IncomingMessage, address: string): Refusal | null {
    if (this.draining) return { status: 503, reason: 'draining', message: 'server is shutting down' };
    if (this.options.path !== null && pathOf(request) !== this.options.path) {
      return { status: 404, reason: 'path', message: `no WebSocket endpoint at ${truncate(pathOf(request))} (try ${this.options.path})` };
    }
    const handshake = checkHandshake(request);
    if (handshake) return handshake;
    const origin = checkOrigin(request, this.options.origins);
    if (origin) return origin;
    const offered = parseProtocols(request.headers['sec-websocket-protocol']);
    if (offered === null) return { status: 400, reason: 'bad-request', message: 'invalid Sec-WebSocket-Protocol header' };
    const negotiation = negotiateProtocol(offered, this.options.protocols, this.options.requireProtocol);
    if ('status' in negotiation) return negotiation;
    if (negotiation.protocol) this.negotiated.set(request, negotiation.protocol);
    // one address (client, or a NAT) cannot take every slot; 429: the limit is this client's, not the server's capacity.
    if (this.perAddress.get(address) >= this.options.maxConnectionsPerAddress) {
      return {
        status: 429,
        reason: 'per-address',
        message: `too many connections from ${address} (limit ${this.options.maxConnectionsPerAddress} per address)`,
      };
    }
    // A session is asked for in the URL (docs/sessions.md): refused here when malformed. With sessions off, a
    // well-formed ask is accepted and closed at once with 4501 (`closeSessionless`): a browser cannot read a 400.
    const wantsSession = sessionRequested(request.url ?? '/');
    if (!wantsSession.ok) return { status: 400, reason: 'bad-request', message: wantsSession.error };
    if (this.hub.size + this.admitting.size + (this.sessions?.pending.size ?? 0) >= this.options.maxConnections) {
      return {
        status: 503,
        reason: 'max-connections',
        message: `too many connections (limit ${this.options.maxConnections})`,
      };
    }
    return null;
  }

  private refuse(request: IncomingMessage, socket: Duplex, refusal: Refusal): void {
    this.metrics.refusedTotal.inc({ reason: refusal.reason });
    // The URL and Origin are the peer's: cut, as every header value in the reasons is (a 15 KB URL made a 30 KB line).
    const { url, origin } = { url: request.url, origin: request.headers.origin };
    const fields = {
      status: refusal.status,
      reason: refusal.reason,
      url: url === undefined ? undefined : truncate(url, LOGGED_TEXT_MAX),
      origin: origin === undefined ? undefined : truncate(origin, LOGGED_TEXT_MAX),
      remote: request.socket.remoteAddress,
    };
    if (refusal.reason === 'per-address') {
      // Behind a reverse proxy that is not trusted, every client shares the proxy's address: say so where the operator looks.
      const hint = request.headers['x-forwarded-for'] !== undefined && !isTrustedProxy(request.socket.remoteAddress ?? '', this.options.trustProxy)
        ? ' (the request came through a proxy that is not trusted: set trustProxy / --trust-proxy so that X-Forwarded-For names the client)'
        : '';
      this.refusalLog.note(refusal.reason, 0, fields, `upgrade refused: ${refusal.message}${hint}`);
    }
    else this.logger?.info(fields, `upgrade refused: ${refusal.message}`);
    refuseUpgrade(socket, refusal, { ...(refusal.status === 503 || refusal.status === 429 ? { 'Retry-After': '5' } : {}), ...refusal.headers });
    this.emit('refused', refusal, request);
  }

  private async authenticateThenUpgrade(request: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    let auth: Auth | null = null;
    if (this.raw.authenticate) {
      let refusal: Refusal | null = null;
      let timer: NodeJS.Timeout | undefined;
      try {
        const timeoutMs = this.options.authenticateTimeout;
        const result = await Promise.race([
          this.raw.authenticate(request),
          new Promise<never>((_, reject) => {
            timer = setTimeout(
              () => reject(new AdmissionError(503, `authentication timed out after ${timeoutMs} ms`)),
              timeoutMs,
            );
          }),
        ]);
        if (result === false || result === null || result === undefined) {
          refusal = { status: 401, reason: 'unauthenticated', message: 'authentication required' };
        } else auth = result;
      } catch (err) {
        if (err instanceof AdmissionError) {
          refusal = { status: err.status, reason: err.status === 401 ? 'unauthenticated' : 'auth-rejected', message: err.message };
        } else {
          this.emit('handlerError', err, null);
          this.logger?.error({ err, url: request.url }, 'authenticate threw');
          refusal = { status: 500, reason: 'auth-error', message: 'authentication failed' };
        }
      } finally {
        clearTimeout(timer);
      }
      if (!this.admitting.has(socket)) return; // refused by close() meanwhile
      if (refusal || this.draining || socket.destroyed) {
        this.admitting.delete(socket);
        if (socket.destroyed) return;
        return this.refuse(request, socket, refusal ?? { status: 503, reason: 'draining', message: 'server is shutting down' });
      }
    }
    // ws is about to add its 'close' listener: ours goes first (see onCountedClose). ws completes an
    // upgrade synchronously (no verifyClient here); one it refuses, or completes later, gets ours back.
    socket.off('close', this.onCountedClose);
    let upgraded = false;
    this.wss.handleUpgrade(request, socket, head, (ws) => {
      upgraded = true;
      this.admitting.delete(socket);
      // ws owns the socket now, with its own listeners: ours go (leaving ws's, so no event key is deleted).
      socket.off('error', ignore);
      if (this.sessions === null && wantsSession(request)) return this.closeSessionless(ws, socket, request);
      this.open(ws, socket, request, auth as Auth);
    });
    if (!upgraded) socket.on('close', this.onCountedClose);
  }

  /** A counted socket closed, or its connection ended: it leaves `admitting`, its address's count is freed (once). */
  private releaseCounted(socket: Duplex): void {
    this.admitting.delete(socket);
    const address = this.countedAs.get(socket);
    if (address === undefined) return;
    this.countedAs.delete(socket);
    this.perAddress.remove(address);
  }

  /** Upgrades accepted only to be closed 4501 (sessions off), until their socket closes: terminated by close() (R3). */
  private readonly sessionless = new Set<import('ws').WebSocket>();

  /**
   * A client asked for a session and this server has sessions off: the
   * upgrade is accepted and closed at once with 4501 and the reason
   * (docs/protocol.md). A browser is never shown a refused upgrade's status,
   * only a close code, so both clients can stop (`unsupported`) instead of
   * retrying. Not a connection: no hub entry, no `connection` event; counted
   * as refused (`sessions-off`). The handshake is bounded by closeTimeout (R16).
   */
  private closeSessionless(ws: import('ws').WebSocket, socket: Duplex, request: IncomingMessage): void {
    this.metrics.refusedTotal.inc({ reason: 'sessions-off' });
    this.logger?.info(
      { code: CloseCodes.SESSIONS_UNSUPPORTED, reason: 'sessions-off', url: request.url, origin: request.headers.origin, remote: request.socket.remoteAddress },
      `session refused: ${SESSIONS_UNSUPPORTED_REASON} (closed ${CloseCodes.SESSIONS_UNSUPPORTED})`,
    );
    this.sessionless.add(ws);
    ws.on('error', ignore);
    ws.once('close', () => {
      this.sessionless.delete(ws);
      this.releaseCounted(socket);
    });
    // Bounded by ws itself: its close() arms the close timer with the closeTimeout this server gave ws (R16), the
    // same backstop every connection has; no machine runs for a connection the application never sees.
    ws.close(CloseCodes.SESSIONS_UNSUPPORTED, SESSIONS_UNSUPPORTED_REASON);
  }

  /** The peer's address and port; behind a trusted proxy, the client X-Forwarded-For names (its port unknown). */
  private remoteOf(request: IncomingMessage, socket: Duplex): { remoteHost: string; remotePort: number | undefined } {
    const client = this.countedAs.get(socket);
    if (client !== undefined && client !== normaliseAddress(request.socket.remoteAddress)) return { remoteHost: client, remotePort: undefined };
    return { remoteHost: request.socket.remoteAddress ?? '?', remotePort: request.socket.remotePort };
  }

  private open(ws: import('ws').WebSocket, socket: Duplex, request: IncomingMessage, auth: Auth): void {
    const id = `${this.idPrefix}${(++this.opened).toString(36)}`;
    const connection: Connection<Auth> = new Connection<Auth>({
      id,
      ws,
      socket,
      ...this.remoteOf(request, socket),
      protocol: ws.protocol,
      auth,
      shared: (this.connectionShared ??= {
        hooks: this.hooks,
        runner: this.runnerConfig,
        sendQueue: this.options.sendQueue,
        maxMessageRate: this.options.maxMessageRate,
        scheduler: this.scheduler,
        ...(this.options.budget ? { budget: this.options.budget } : {}),
        ...(this.sessions !== null ? { sessions: this.sessions } : {}),
      }),
    });
    // A session connection goes live once its session is attached (its first frame): sessions.ts announces it.
    const asked = sessionRequested(request.url ?? '/');
    const session = this.sessions !== null && asked.ok && asked.requested;
    if (session) connection.sessionBinding = this.sessions!.bind(connection);
    else this.hub.register(connection);
    this.metrics.opened();
    if (this.logger) {
      const log = this.logger.child({ conn: id });
      this.logs.set(connection, log);
      log.info({ remote: connection.remoteAddress, protocol: connection.protocol || undefined }, 'connection opened');
      // Lifecycle transitions at debug: subscribed only when someone will read them.
      if (log.isLevelEnabled?.('debug') ?? true) {
        let last = '';
        connection.machine.subscribe((snapshot) => {
          const value = JSON.stringify(snapshot.value);
          if (value !== last) log.debug({ state: snapshot.value, from: last ? JSON.parse(last) : undefined }, 'transition');
          last = value;
        });
      }
    }
    if (session) this.requests.set(connection, request);
    connection.start();
    if (!session) this.emit('connection', connection, request);
  }

  /** The upgrade request of each session connection, until it is announced (the `connection` event carries it). */
  private readonly requests = new WeakMap<Connection<Auth>, IncomingMessage>();

  private startSessions(options: SupervisorOptions<Auth>): Sessions<Auth> {
    const resolved = resolveSessionOptions<Auth>(options.sessions!);
    return new Sessions<Auth>(resolved, {
      logger: this.logger,
      maxDetachedPerAddress: this.options.maxConnectionsPerAddress,
      announce: (connection, topics) => {
        this.hub.register(connection);
        for (const topic of topics) {
          try {
            this.hub.join(connection, topic);
          } catch (err) {
            // e.g. maxTopicsPerConnection lowered since: the membership stays in the session, not in this hub.
            this.logs.get(connection)?.warn({ err, topic }, 'session topic not restored');
          }
        }
        const request = this.requests.get(connection);
        this.requests.delete(connection);
        this.emit('connection', connection, request!);
      },
      emitSession: (event) => {
        this.metrics.sessionEvent(event.type);
        this.emit('session', event);
      },
      deadLetter: (letter) => {
        this.metrics.sessionDeadLettersTotal.inc({ reason: letter.reason }, letter.messages.length);
        // A store outage makes one per message: the first logged, the rest one line per interval.
        let bytes = 0;
        for (const m of letter.messages) bytes += m.bytes;
        this.sessionLetterLog.note(
          letter.reason,
          bytes,
          { session: letter.sessionId, reason: letter.reason, detail: letter.detail, messages: letter.messages.length },
          'session dead letter: messages that will never reach their client',
        );
        this.emit('sessionDeadLetter', letter);
      },
      metrics: {
        resume: (result, reason) => this.metrics.sessionResumesTotal.inc({ result, reason }),
        replayed: (n) => this.metrics.sessionReplayedTotal.inc(n),
        storeFailed: (operation) => this.metrics.sessionStoreFailuresTotal.inc({ operation }),
      },
    });
  }
}

/** Creates a supervisor; see `SupervisorOptions` for every option and its default. */
export function createSupervisor<Auth = unknown>(options: SupervisorOptions<Auth> = {}): Supervisor<Auth> {
  return new Supervisor<Auth>(options);
}

/** Characters of the peer's URL and Origin a refusal's log line keeps (docs/protocol.md, "HTTP statuses at upgrade"). */
const LOGGED_TEXT_MAX = 256;

/** An absolute-form request target: `http://` or `https://`, then the authority up to the path. */
const ABSOLUTE_FORM = /^https?:\/\/[^/?#]*/i;

/**
 * The path the request asks for, without its query. The target may be in absolute form
 * (`GET http://host:port/server?x=1`): RFC 6455 4.2.1 lets a handshake's Request-URI be an absolute
 * http or https URI whose resource name matches, and RFC 7230 5.3.2 makes a server accept that form.
 * Before, such a handshake was refused 404 (its path compared whole, scheme and host included).
 */
function pathOf(request: { url?: string }): string {
  let url = request.url ?? '/';
  const absolute = ABSOLUTE_FORM.exec(url);
  if (absolute !== null) url = url.slice(absolute[0].length) || '/';
  if (url.startsWith('?')) url = `/${url}`;
  const q = url.indexOf('?');
  return q === -1 ? url : url.slice(0, q);
}

function ignore(): void {}

/** The upgrade asked for a session (a malformed ask was refused 400 at admission). */
function wantsSession(request: IncomingMessage): boolean {
  const asked = sessionRequested(request.url ?? '/');
  return asked.ok && asked.requested;
}
