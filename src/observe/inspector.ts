/**
 * `--inspect`: stream every connection actor's inspection events to the
 * Stately inspector, with the one integration that works on a machine without
 * internet access: `@statelyai/inspect`'s local relay (`createInspectorServer`)
 * fed by `createWebSocketInspector`. Events travel over loopback only.
 *
 * Why not the others: `createSkyInspector` uploads to stately.ai (network);
 * `createBrowserInspector` opens the stately.ai UI from a browser page and is
 * a no-op in Node. The relay's own page also embeds the Stately UI from
 * stately.ai, so *viewing* there needs internet in the viewer's browser; the
 * events themselves never leave the machine, any WebSocket receiver
 * (`createWebSocketReceiver`) can read them, and the built-in dashboard
 * (/dashboard) shows the same machines offline.
 */
import { createConnection } from 'node:net';
import type { InspectionEvent } from 'xstate';
import { importPeer } from '../base/optional-peer.ts';

// @statelyai/inspect (with superjson and partysocket) is an optional peer dependency:
// only --inspect needs it, so it loads here, on first use, and is named if missing.
type InspectModule = typeof import('@statelyai/inspect');
type InspectServerModule = typeof import('@statelyai/inspect/server');
const FEATURE = '--inspect';

export interface InspectorHandle {
  /** Pass as the supervisor's `inspect` option. */
  inspect: (event: InspectionEvent) => void;
  /** Where receivers connect (ws://localhost:PORT). */
  relayUrl: string;
  /** The relay's page (embeds the Stately UI: needs internet in the viewer's browser). */
  pageUrl: string;
  stop(): void;
}

/** Resolves once something accepts TCP connections on localhost:port (the relay listens asynchronously). */
async function waitForPort(port: number, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = createConnection({ host: 'localhost', port });
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`inspector relay did not start on port ${port}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Starts the local relay on `port` and an inspector connected to it. */
export async function startInspector(port: number): Promise<InspectorHandle> {
  const [{ createWebSocketInspector }, { createInspectorServer }] = await Promise.all([
    importPeer<InspectModule>('@statelyai/inspect', '@statelyai/inspect', FEATURE),
    importPeer<InspectServerModule>('@statelyai/inspect/server', '@statelyai/inspect', FEATURE),
  ]);
  const relay = createInspectorServer({ port, autoOpen: false });
  await waitForPort(port);
  const relayUrl = `ws://localhost:${port}`;
  const inspector = createWebSocketInspector({
    url: relayUrl,
    // The transport handle (socket, queues) is not state anyone needs to see,
    // and serialising a socket's object graph on every event is costly.
    serialize: (event) => redactIO(event as unknown as Record<string, unknown>) as never,
  });
  return {
    inspect: (event) => inspector.inspect.next?.(event),
    relayUrl,
    pageUrl: `http://localhost:${port}`,
    stop() {
      inspector.stop();
      relay.stop();
    },
  };
}

/** Replaces `context.io` / `event.io` (opaque transport handles) with a marker. */
function redactIO(event: Record<string, unknown>): Record<string, unknown> {
  const out = { ...event };
  const snapshot = out.snapshot as { context?: Record<string, unknown> } | undefined;
  if (snapshot?.context && 'io' in snapshot.context) {
    out.snapshot = { ...snapshot, context: { ...snapshot.context, io: '[transport]' } };
  }
  const ev = out.event as Record<string, unknown> | undefined;
  if (ev && typeof ev === 'object' && 'io' in ev) out.event = { ...ev, io: '[transport]' };
  return out;
}
