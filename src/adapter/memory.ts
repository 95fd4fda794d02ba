/**
 * The in-memory adapter, the embedded default: nothing to install, nothing
 * leaves the process. Alone (the default) it is a cluster of one node. Several
 * supervisors in one process can share a MemoryBus to act as one cluster
 * (tests, or several servers in one process); delivery to the others is
 * asynchronous, as over a network, so a publisher never runs another node's
 * sends inside its own call.
 */
import { hostname } from 'node:os';
import { randomUUID } from 'node:crypto';
import type { Adapter, AdapterHost, AdapterMessage, AdapterStatus, NodeInfo } from './types.ts';

/** A process-local message bus shared by memory adapters. */
export class MemoryBus {
  readonly adapters = new Set<MemoryAdapter>();
}

export interface MemoryAdapterOptions {
  /** Share with other memory adapters of this process. Default: a private bus (a cluster of one). */
  bus?: MemoryBus;
  /** Default: a random UUID. */
  nodeId?: string;
}

export class MemoryAdapter implements Adapter {
  readonly name = 'memory';
  readonly nodeId: string;
  readonly status: AdapterStatus = 'up';
  readonly statusReason = null;
  private readonly bus: MemoryBus;
  private host: AdapterHost | null = null;
  private readonly startedAt = Date.now();

  constructor(options: MemoryAdapterOptions = {}) {
    this.bus = options.bus ?? new MemoryBus();
    this.nodeId = options.nodeId ?? randomUUID();
  }

  attach(host: AdapterHost): void {
    if (this.host) throw new Error('ws-supervisor: this adapter is already attached to a supervisor');
    this.host = host;
    this.bus.adapters.add(this);
    host.statusChanged('up', null);
  }

  publish(message: AdapterMessage): void {
    for (const other of this.bus.adapters) {
      if (other === this) continue; // delivered locally already: never twice
      setImmediate(() => other.host?.deliver(message));
    }
  }

  async nodes(): Promise<NodeInfo[]> {
    const now = Date.now();
    return [...this.bus.adapters].map((a) => ({
      id: a.nodeId,
      connections: a.host?.connections() ?? 0,
      startedAt: a.startedAt,
      updatedAt: now,
      hostname: hostname(),
      pid: process.pid,
      self: a === this,
    }));
  }

  async close(): Promise<void> {
    this.bus.adapters.delete(this);
    this.host = null;
  }
}

/** The default adapter: this process only; pass a shared `bus` to join others in the same process. */
export function createMemoryAdapter(options: MemoryAdapterOptions = {}): MemoryAdapter {
  return new MemoryAdapter(options);
}
