/**
 * Draws the connection machine's state diagram for the dashboard, AT BUILD
 * TIME: the states and transitions are walked from `machine.root`
 * (src/observe/machine-walk.ts, the same walker the generated docs use), laid
 * out by ELK (elkjs, the Eclipse Layout Kernel: layered algorithm with
 * compound/parallel states as nested nodes), and the SVG is written from ELK's
 * coordinates into src/observe/dashboard/connection-diagram.ts, which is
 * committed. The machine is static, so the layout is too: the dashboard serves
 * the committed SVG, and an application never installs or loads elkjs (a
 * devDependency). test/observe/diagram.test.ts lays the machine out again and
 * fails if the committed file differs, so the drawing cannot drift.
 *
 *   npm run docs             rewrites it (with the docs/ diagrams)
 *   npm run docs -- --check  exits 1 if it is stale
 *
 * Every state's group carries `data-state="<path>"` (e.g. `open.heartbeat.pinging`)
 * with a `.count` text the page updates live; every edge group carries
 * `data-source`/`data-target` and one label line per transition.
 */
import { createRequire } from 'node:module';
import {
  allNodes,
  allTransitions,
  children,
  eventLabel,
  rootOf,
  statePath,
  type StateNodeLike,
} from '../src/observe/machine-walk.ts';
import { connectionMachine } from '../machines/connection.machine.ts';
import { sessionMachine } from '../machines/session.machine.ts';

// The slice of ELK's JSON graph format used here (elkjs's own .d.ts does not pass this
// project's strict lib check, so it is not imported; see https://eclipse.dev/elk/documentation/tooldevelopers/graphdatastructure/jsonformat.html).
interface ElkShape {
  x?: number;
  y?: number;
  width?: number;
  height?: number;
}
interface ElkLabel extends ElkShape {
  id?: string;
  text?: string;
}
interface ElkNode extends ElkShape {
  id: string;
  children?: ElkNode[];
  edges?: ElkExtendedEdge[];
  layoutOptions?: Record<string, string>;
}
interface ElkPoint {
  x: number;
  y: number;
}
interface ElkExtendedEdge {
  id: string;
  sources: string[];
  targets: string[];
  labels?: ElkLabel[];
  sections?: { startPoint: ElkPoint; endPoint: ElkPoint; bendPoints?: ElkPoint[] }[];
}
interface Elk {
  layout(graph: ElkNode): Promise<ElkNode>;
}

/** elkjs (CommonJS, a devDependency), loaded on first use only. */
function loadElk(): Elk {
  const ELK = createRequire(import.meta.url)('elkjs/lib/elk.bundled.js') as new () => Elk;
  return new ELK();
}

/** One state of the machine, as the dashboard knows it. */
export interface DiagramState {
  /** Key path below the root, e.g. `open.heartbeat.pinging`. */
  path: string;
  key: string;
  type: StateNodeLike['type'];
  /** A region of a parallel state (drawn dashed, no count of its own). */
  region: boolean;
  description?: string;
}

/** One drawn edge: all transitions between the same two states, one label line each. */
export interface DiagramEdge {
  source: string;
  target: string;
  labels: string[];
}

export interface MachineDiagram {
  /** Every state below the root, parents before children. */
  states: DiagramState[];
  edges: DiagramEdge[];
  svg: string;
  width: number;
  height: number;
}

// Text is drawn in a monospace font so its width is known without measuring (0.6 em per character).
const FONT = `ui-monospace, 'DejaVu Sans Mono', Menlo, Consolas, monospace`;
const NAME_PX = 12;
const LABEL_PX = 11;
const CHAR = 0.61;
const LINE = 13;
const BADGE_W = 40;
const BADGE_H = 18;
const STATE_H = 40;
const HEADER = 30;
const INIT = 12;

const esc = (s: string): string =>
  s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
const n1 = (x: number): string => String(Math.round(x * 10) / 10);
const textWidth = (text: string, px: number): number => Math.ceil(text.length * px * CHAR);

/** The states and (grouped) transitions of a machine, walked from its root. */
export function machineStructure(machine: { root: unknown }): { states: DiagramState[]; edges: DiagramEdge[] } {
  const root = rootOf(machine);
  const states = allNodes(root)
    .slice(1)
    .map((n) => ({
      path: statePath(n),
      key: n.key,
      type: n.type,
      region: n.parent?.type === 'parallel',
      ...(n.description ? { description: n.description } : {}),
    }));
  const byPair = new Map<string, DiagramEdge>();
  for (const t of allTransitions(root)) {
    const source = statePath(t.source);
    for (const target of t.target ?? [t.source]) {
      const to = statePath(target);
      const key = `${source}\u0000${to}`;
      let edge = byPair.get(key);
      if (!edge) byPair.set(key, (edge = { source, target: to, labels: [] }));
      edge.labels.push(t.target ? eventLabel(t) : `${eventLabel(t)} (stays)`);
    }
  }
  return { states, edges: [...byPair.values()] };
}

/** Layered-algorithm options, set on every graph level (ELK does not inherit them into nested graphs). */
const LAYERED = {
  'elk.algorithm': 'layered',
  'elk.direction': 'DOWN',
  'elk.edgeRouting': 'ORTHOGONAL',
  'elk.edgeLabels.placement': 'CENTER',
  'elk.layered.nodePlacement.strategy': 'NETWORK_SIMPLEX',
  // Cycles (idle ⇄ pinging) are broken depth first from the initial state, so the
  // initial state comes first and the forward transitions point down. (ELK
  // 0.12's MODEL_ORDER cycle breaker and considerModelOrder crash on nested graphs.)
  'elk.layered.cycleBreaking.strategy': 'DEPTH_FIRST',
  'elk.layered.spacing.nodeNodeBetweenLayers': '34',
  'elk.layered.spacing.edgeNodeBetweenLayers': '14',
  'elk.layered.spacing.edgeEdgeBetweenLayers': '10',
  'elk.spacing.nodeNode': '28',
  'elk.spacing.edgeNode': '14',
  'elk.spacing.edgeEdge': '10',
  'elk.spacing.edgeLabel': '3',
};

const elkId = (path: string): string => (path === '' ? '(root)' : path);

/** A transition of a compound state (or of the machine) to a state inside it: it applies in any state within. */
const fromAnyState = (e: DiagramEdge): boolean => e.source === '' || e.target.startsWith(`${e.source}.`);
/** Its source is drawn as a pseudo-state `any state` inside that compound (ELK cannot route a box to its own child). */
const ANY_LABEL = 'any state';
const anyId = (path: string): string => `any:${path}`;

function elkGraph(root: StateNodeLike, edges: DiagramEdge[]): ElkNode {
  const anyIn = new Set(edges.filter(fromAnyState).map((e) => e.source));
  const build = (n: StateNodeLike): ElkNode => {
    const path = statePath(n);
    const kids = children(n);
    const region = n.parent?.type === 'parallel';
    const headerWidth = textWidth(n.key, NAME_PX) + (region ? 24 : 24 + BADGE_W + 10);
    if (kids.length === 0) {
      return { id: elkId(path), width: Math.max(110, headerWidth + 6), height: STATE_H };
    }
    const nodes = kids.map(build);
    if (n.type !== 'parallel' && n.initial?.target[0]) nodes.unshift({ id: `init:${path}`, width: INIT, height: INIT });
    if (anyIn.has(path)) nodes.push({ id: anyId(path), width: textWidth(ANY_LABEL, NAME_PX) + 24, height: STATE_H });
    const node: ElkNode = {
      id: elkId(path),
      children: nodes,
      layoutOptions: {
        ...LAYERED,
        'elk.padding': `[top=${region ? HEADER - 6 : HEADER},left=14,bottom=14,right=14]`,
        'elk.nodeSize.constraints': 'MINIMUM_SIZE',
        'elk.nodeSize.minimum': `(${headerWidth}, ${HEADER + 20})`,
      },
    };
    return node;
  };
  const top = build(root);
  const elkEdges: ElkExtendedEdge[] = edges.map((e, i) => {
    const width = Math.max(...e.labels.map((l) => textWidth(l, LABEL_PX))) + 6;
    return {
      id: `e${i}`,
      sources: [fromAnyState(e) ? anyId(e.source) : elkId(e.source)],
      targets: [elkId(e.target)],
      labels: [{ id: `e${i}:label`, text: e.labels.join('\n'), width, height: e.labels.length * LINE + 4 }],
    };
  });
  // Arrows from each initial pseudo-state to its initial state.
  for (const n of allNodes(root)) {
    const initial = n.type !== 'parallel' ? n.initial?.target[0] : undefined;
    if (initial) {
      elkEdges.push({ id: `init-edge:${statePath(n)}`, sources: [`init:${statePath(n)}`], targets: [elkId(statePath(initial))] });
    }
  }
  return {
    ...top,
    layoutOptions: {
      ...LAYERED,
      'elk.hierarchyHandling': 'INCLUDE_CHILDREN',
      'elk.padding': '[top=8,left=8,bottom=8,right=8]',
      // Absolute coordinates for every shape and edge: the SVG needs no transforms.
      'org.eclipse.elk.json.shapeCoords': 'ROOT',
      'org.eclipse.elk.json.edgeCoords': 'ROOT',
    },
    edges: elkEdges,
  };
}

interface Laid {
  x: number;
  y: number;
  width: number;
  height: number;
}

function laid(n: ElkShape): Laid {
  return { x: n.x ?? 0, y: n.y ?? 0, width: n.width ?? 0, height: n.height ?? 0 };
}

function flatten(n: ElkNode, out: Map<string, ElkNode> = new Map()): Map<string, ElkNode> {
  out.set(n.id, n);
  for (const c of n.children ?? []) flatten(c, out);
  return out;
}

function badge(x: number, y: number, cls: string, title: string): string {
  return (
    `<g class="badge ${cls}"><title>${esc(title)}</title>` +
    `<rect x="${n1(x)}" y="${n1(y)}" width="${BADGE_W}" height="${BADGE_H}" rx="9"/>` +
    `<text class="count" x="${n1(x + BADGE_W / 2)}" y="${n1(y + BADGE_H / 2 + 4)}" text-anchor="middle">0</text></g>`
  );
}

const STYLE = `
.wsd { font-family: ${FONT}; }
.wsd .box { fill: #ffffff; stroke: #94a3b8; stroke-width: 1.2; }
.wsd .compound > .box { fill: #f8fafc; }
.wsd .region > .box { fill: none; stroke-dasharray: 5 4; stroke: #cbd5e1; }
.wsd .final > .inner { fill: none; stroke: #94a3b8; stroke-width: 1; }
.wsd .name { font-size: ${NAME_PX}px; font-weight: 700; fill: #0f172a; }
.wsd .region > .name { font-weight: 400; font-style: italic; fill: #64748b; }
.wsd .badge rect { fill: #e2e8f0; }
.wsd .badge text { font-size: ${LABEL_PX}px; font-weight: 700; fill: #475569; }
.wsd .state.live > .box { fill: #dbeafe; stroke: #2563eb; stroke-width: 2; }
.wsd .compound.live > .box { fill: #eff6ff; }
.wsd .state.live > .badge rect { fill: #2563eb; }
.wsd .state.live > .badge text { fill: #ffffff; }
.wsd .badge.total rect { fill: #f1f5f9; stroke: #cbd5e1; }
.wsd .init { fill: #334155; }
.wsd .edge path { fill: none; stroke: #64748b; stroke-width: 1.2; }
.wsd .edge .label-bg { fill: #ffffff; fill-opacity: 0.85; }
.wsd .edge text { font-size: ${LABEL_PX}px; fill: #334155; }
`;

/** Lays out `machine` with ELK and renders the SVG (async: ELK's API is promise-based). */
export async function renderMachineDiagram(machine: { root: unknown }, title = 'state machine'): Promise<MachineDiagram> {
  const root = rootOf(machine);
  const { states, edges } = machineStructure(machine);
  const graph = await loadElk().layout(elkGraph(root, edges));
  const byId = flatten(graph);
  const width = Math.ceil(graph.width ?? 0);
  const height = Math.ceil(graph.height ?? 0);
  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" class="wsd" viewBox="0 0 ${width} ${height}" width="${width}" height="${height}" role="img" aria-label="${esc(title)}">`,
    `<title>${esc(title)}</title>`,
    `<style>${STYLE}</style>`,
    `<defs><marker id="wsd-arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="9" markerHeight="9" markerUnits="userSpaceOnUse" orient="auto-start-reverse">` +
      `<path d="M0,0 L10,5 L0,10 z" fill="#64748b"/></marker></defs>`,
  );

  // States: parents before children, so nested boxes are drawn on top of their parents.
  out.push('<g class="states">');
  for (const n of allNodes(root).slice(1)) {
    const path = statePath(n);
    const box = laid(byId.get(elkId(path))!);
    const kids = children(n).length > 0;
    const region = n.parent?.type === 'parallel';
    const cls = ['state', kids ? 'compound' : 'atomic', region ? 'region' : '', n.type === 'final' ? 'final' : '']
      .filter(Boolean)
      .join(' ');
    const tip = `${path} (${n.type})${n.description ? `: ${n.description}` : ''}`;
    out.push(`<g class="${cls}" data-state="${esc(path)}" data-type="${n.type}"><title>${esc(tip)}</title>`);
    out.push(
      `<rect class="box" x="${n1(box.x)}" y="${n1(box.y)}" width="${n1(box.width)}" height="${n1(box.height)}" rx="${kids ? 10 : 8}"/>`,
    );
    if (n.type === 'final') {
      out.push(
        `<rect class="inner" x="${n1(box.x + 3)}" y="${n1(box.y + 3)}" width="${n1(box.width - 6)}" height="${n1(box.height - 6)}" rx="6"/>`,
      );
    }
    if (kids) {
      out.push(`<text class="name" x="${n1(box.x + 12)}" y="${n1(box.y + (region ? 16 : 19))}">${esc(n.key)}</text>`);
      if (!region) out.push(badge(box.x + box.width - BADGE_W - 8, box.y + 6, '', `connections in ${path}`));
    } else {
      out.push(`<text class="name" x="${n1(box.x + 12)}" y="${n1(box.y + box.height / 2 + 4)}">${esc(n.key)}</text>`);
      const total = n.type === 'final';
      out.push(
        badge(
          box.x + box.width - BADGE_W - 8,
          box.y + (box.height - BADGE_H) / 2,
          total ? 'total' : '',
          total ? 'connections closed since the dashboard started' : `connections in ${path}`,
        ),
      );
    }
    out.push('</g>');
  }
  out.push('</g>');

  // `any state` pseudo-states: the source of transitions that apply in every state of their compound.
  for (const n of allNodes(root)) {
    const any = byId.get(anyId(statePath(n)));
    if (!any) continue;
    const b = laid(any);
    out.push(`<g class="any"><title>${esc(`any state of ${statePath(n) || 'the machine'}`)}</title>` +
      `<rect class="box" x="${n1(b.x)}" y="${n1(b.y)}" width="${n1(b.width)}" height="${n1(b.height)}" rx="8" stroke-dasharray="5 4"/>` +
      `<text class="name" x="${n1(b.x + 12)}" y="${n1(b.y + b.height / 2 + 4)}">${ANY_LABEL}</text></g>`);
  }

  out.push('<g class="initial">');
  for (const n of allNodes(root)) {
    const init = byId.get(`init:${statePath(n)}`);
    if (!init) continue;
    const b = laid(init);
    out.push(`<circle class="init" cx="${n1(b.x + b.width / 2)}" cy="${n1(b.y + b.height / 2)}" r="${n1(b.width / 2)}"/>`);
  }
  out.push('</g>');

  // Edges: polylines from ELK's sections, then the label lines on a light background.
  out.push('<g class="edges">');
  for (const e of graph.edges ?? []) {
    const points = (e.sections ?? []).flatMap((s) => [s.startPoint, ...(s.bendPoints ?? []), s.endPoint]);
    const d = points.map((p, i) => `${i === 0 ? 'M' : 'L'}${n1(p.x)},${n1(p.y)}`).join(' ');
    const initial = e.id.startsWith('init-edge:');
    const model = initial ? null : edges[Number(e.id.slice(1))]!;
    out.push(
      model
        ? `<g class="edge" data-source="${esc(model.source)}" data-target="${esc(model.target)}">`
        : `<g class="edge initial-edge">`,
    );
    out.push(`<path d="${d}" marker-end="url(#wsd-arrow)"/>`);
    const label = e.labels?.[0];
    if (model && label) {
      const l = laid(label);
      out.push(`<rect class="label-bg" x="${n1(l.x - 1)}" y="${n1(l.y)}" width="${n1(l.width + 2)}" height="${n1(l.height)}" rx="3"/>`);
      out.push('<text>');
      model.labels.forEach((line, i) => {
        out.push(`<tspan class="event" x="${n1(l.x + 3)}" y="${n1(l.y + 2 + LINE * (i + 1) - 3)}">${esc(line)}</tspan>`);
      });
      out.push('</text>');
    }
    out.push('</g>');
  }
  out.push('</g>');
  out.push('</svg>');
  return { states, edges, svg: out.join('\n'), width, height };
}

/** Where the dashboard's diagram is committed, relative to the repository root. */
export const DIAGRAM_MODULE = 'src/observe/dashboard/connection-diagram.ts';

/** The text of DIAGRAM_MODULE: the connection machine laid out now. */
export async function renderDiagramModule(): Promise<string> {
  const d = await renderMachineDiagram(connectionMachine, 'connection machine');
  return `// Generated by \`npm run docs\` (scripts/render-diagram.ts) from machines/connection.machine.ts,
// laid out by elkjs at build time so the dashboard needs no layout engine at run time.
// Do not edit by hand: test/observe/diagram.test.ts fails when it differs from the machine.

/** The connection machine's state diagram (SVG, ${d.width}×${d.height}), as the dashboard serves it. */
export const CONNECTION_DIAGRAM_SVG: string = ${JSON.stringify(d.svg)};
`;
}

export const SESSION_DIAGRAM_MODULE = 'src/observe/dashboard/session-diagram.ts';

/** The text of SESSION_DIAGRAM_MODULE: the session machine laid out now (the dashboard's detached sessions section). */
export async function renderSessionDiagramModule(): Promise<string> {
  const d = await renderMachineDiagram(sessionMachine, 'session machine');
  return `// Generated by \`npm run docs\` (scripts/render-diagram.ts) from machines/session.machine.ts,
// laid out by elkjs at build time so the dashboard needs no layout engine at run time.
// Do not edit by hand: test/observe/diagram.test.ts fails when it differs from the machine.

/** The session machine's state diagram (SVG, ${d.width}×${d.height}), as the dashboard serves it. */
export const SESSION_DIAGRAM_SVG: string = ${JSON.stringify(d.svg)};
`;
}
