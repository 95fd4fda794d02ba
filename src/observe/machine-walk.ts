/**
 * Walking an XState v5 machine definition (`machine.root`): the states, the
 * transitions and a human label for each. Shared by the generated docs
 * (scripts/render-machines.ts → Mermaid) and the live dashboard
 * (src/observe/dashboard/diagram.ts → ELK → SVG), so both draw the same machine the
 * same way and neither can drift from the code.
 */

/** The parts of xstate's StateNode we read (its public shape in v5). */
export interface StateNodeLike {
  key: string;
  id: string;
  type: 'atomic' | 'compound' | 'parallel' | 'final' | 'history';
  description?: string;
  states: Record<string, StateNodeLike>;
  initial?: { target: readonly StateNodeLike[] };
  parent?: StateNodeLike;
  transitions: Map<string, readonly TransitionLike[]>;
  entry: readonly { type?: string }[] | readonly unknown[];
  invoke: readonly { id: string; src: unknown }[];
}

export interface TransitionLike {
  eventType: string;
  target?: readonly StateNodeLike[];
  guard?: { type: string } | string | unknown;
  reenter?: boolean;
  source: StateNodeLike;
}

/** Human label for an event type: xstate.after.<delay>.<id> → "after <delay>", plus `[guard]` / `[else]`. */
export function eventLabel(t: TransitionLike): string {
  const after = /^xstate\.after\.([^.]+)\./.exec(t.eventType);
  const done = /^xstate\.done\.actor\.(.+)$/.exec(t.eventType);
  let label = after ? `after ${after[1]}` : done ? `done: ${done[1]}` : t.eventType;
  const g = t.guard as { type?: string } | string | undefined;
  const guard = typeof g === 'string' ? g : g?.type;
  if (guard) label += ` [${guard}]`;
  else if (siblingsHaveGuard(t)) label += ' [else]';
  return label;
}

function siblingsHaveGuard(t: TransitionLike): boolean {
  return (t.source.transitions.get(t.eventType) ?? []).some((x) => x !== t && x.guard);
}

/** The named actions a transition runs (xstate's built-ins left out). */
export function actionNames(t: TransitionLike): string {
  const actions = (t as unknown as { actions?: readonly unknown[] }).actions ?? [];
  const names = actions
    .map((a) => (typeof a === 'string' ? a : (a as { type?: string })?.type))
    .filter((a): a is string => typeof a === 'string' && !a.startsWith('xstate.'));
  return names.join(', ');
}

export function children(n: StateNodeLike): StateNodeLike[] {
  return Object.values(n.states);
}

/** `n` and every state below it, depth first, parents before children. */
export function allNodes(n: StateNodeLike): StateNodeLike[] {
  return [n, ...children(n).flatMap(allNodes)];
}

/** Every transition defined anywhere under `root` (including root's own). */
export function allTransitions(root: StateNodeLike): TransitionLike[] {
  return allNodes(root).flatMap((n) => [...n.transitions.values()].flat());
}

/** The machine's root state node, typed for walking. */
export function rootOf(machine: { root: unknown }): StateNodeLike {
  return machine.root as StateNodeLike;
}

/**
 * A state's path of keys below the root, dot-joined, e.g. `open.heartbeat.pinging`
 * (the root itself: ''). The same string as the state's id without the
 * machine id in front, for machines that do not give states custom ids.
 */
export function statePath(n: StateNodeLike): string {
  const keys: string[] = [];
  for (let x: StateNodeLike | undefined = n; x?.parent; x = x.parent) keys.unshift(x.key);
  return keys.join('.');
}
