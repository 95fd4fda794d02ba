/**
 * Renders every machine in machines/ to a Mermaid stateDiagram-v2 (which
 * GitHub draws) plus a transition table, into docs/<name>.md, by walking the
 * machine definition itself, so the drawings cannot drift from the code.
 *
 * It also lays out the dashboard's diagram (scripts/render-diagram.ts).
 *
 *   npm run docs            write docs/*.md and src/observe/dashboard/{connection,session}-diagram.ts
 *   npm run docs -- --check exit 1 if a committed file differs (used by the tests)
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { AnyStateMachine } from 'xstate';
import { clientMachine } from '../machines/client.machine.ts';
import { connectionMachine } from '../machines/connection.machine.ts';
import { gapReaderMachine } from '../machines/gap-reader.machine.ts';
import { pendingRequestMachine } from '../machines/pending-request.machine.ts';
import { sessionMachine } from '../machines/session.machine.ts';
import {
  actionNames,
  allNodes,
  allTransitions,
  children,
  eventLabel,
  type StateNodeLike,
  type TransitionLike,
} from '../src/observe/machine-walk.ts';
import { DIAGRAM_MODULE, renderDiagramModule, renderSessionDiagramModule, SESSION_DIAGRAM_MODULE } from './render-diagram.ts';

type Node = StateNodeLike;
type Transition = TransitionLike;

export interface MachineDoc {
  /** File name under docs/. */
  file: string;
  title: string;
  machine: AnyStateMachine;
  intro: string;
}

export const MACHINES: MachineDoc[] = [
  {
    file: 'connection-machine.md',
    title: 'The connection machine',
    machine: connectionMachine,
    intro:
      'One per WebSocket connection (`machines/connection.machine.ts`). Data messages never pass through it; ' +
      'see [architecture.md](architecture.md) for the data path.',
  },
  {
    file: 'client-machine.md',
    title: 'The client machine',
    machine: clientMachine,
    intro:
      'One per reconnecting client (`machines/client.machine.ts`). Each connected attempt runs the ' +
      '[connection machine](connection-machine.md) as its `connection` child, so client and server share one lifecycle.',
  },
  {
    file: 'session-machine.md',
    title: 'The session machine',
    machine: sessionMachine,
    intro:
      'One per session (`machines/session.machine.ts`): a session outlives its connections. Its `carrier` (the host) ' +
      'drops a connection still open when a resume takes the session over. Messages never pass through it; see ' +
      '[sessions.md](sessions.md) for the protocol, the store and the bounds.',
  },
  {
    file: 'pending-request-machine.md',
    title: 'The pending-request machine',
    machine: pendingRequestMachine,
    intro:
      'One per session request whose store verdict is `pending` (another process counted it and has not finished it), ' +
      'only while it waits (`machines/pending-request.machine.ts`): it asks the store again after a doubling delay until the ' +
      'answer is the reply or `new`. Its `asker` (the host) asks the store. See [sessions.md](sessions.md#requests-run-once-even-when-the-connection-goes-meanwhile-fixed).',
  },
  {
    file: 'gap-reader-machine.md',
    title: 'The gap reader',
    machine: gapReaderMachine,
    intro:
      'One per session connection that ever misses a seq (`machines/gap-reader.machine.ts`), started at its first gap: ' +
      'when the seqs it missed are read from the store, one read at a time. Its `store` (the host) waits for the answers in ' +
      'flight, reads, or closes the connection. See [sessions.md](sessions.md#fan-out-in-the-store-implemented).',
  },
];

const mid = (n: Node): string => n.id.replace(/[^A-Za-z0-9_]/g, '_');

function renderState(n: Node, indent: string, out: string[]): void {
  const kids = children(n);
  out.push(`${indent}state "${n.key}" as ${mid(n)}`);
  if (kids.length === 0) return;
  out.push(`${indent}state ${mid(n)} {`);
  if (n.type === 'parallel') {
    kids.forEach((region, i) => {
      if (i > 0) out.push(`${indent}  --`);
      renderState(region, `${indent}  `, out);
    });
  } else {
    const initial = n.initial?.target[0];
    if (initial) out.push(`${indent}  [*] --> ${mid(initial)}`);
    for (const k of kids) renderState(k, `${indent}  `, out);
  }
  out.push(`${indent}}`);
}

export function renderMermaid(machine: AnyStateMachine): string {
  const root = machine.root as unknown as Node;
  const out: string[] = ['stateDiagram-v2'];
  const initial = root.initial?.target[0];
  if (initial) out.push(`  [*] --> ${mid(initial)}`);
  for (const n of children(root)) renderState(n, '  ', out);
  for (const t of allTransitions(root)) {
    // A transition of the root applies in every live top-level state: drawn from each.
    const sources = t.source === root ? children(root).filter((n) => n.type !== 'final') : [t.source];
    for (const source of sources) {
      for (const target of t.target ?? [source]) {
        out.push(`  ${mid(source)} --> ${mid(target)} : ${eventLabel(t)}`);
      }
    }
  }
  for (const n of allNodes(root)) if (n.type === 'final') out.push(`  ${mid(n)} --> [*]`);
  return out.join('\n');
}

/** A state's id without the machine's own id in front. */
function local(n: Node, root: Node): string {
  return n === root ? '(root)' : n.id.slice(root.id.length + 1);
}

function renderTable(machine: AnyStateMachine): string {
  const root = machine.root as unknown as Node;
  const rows = allTransitions(root).map((t) => {
    const targets = (t.target ?? [t.source]).map((x) => `\`${local(x, root)}\``).join(', ');
    const actions = actionNames(t);
    return `| \`${local(t.source, root)}\` | ${eventLabel(t).replace(/\|/g, '\\|')} | ${t.target ? targets : '(stays: no state change)'}${t.reenter ? ' (re-entered)' : ''} | ${actions || '—'} |`;
  });
  return ['| from | event | to | actions |', '|---|---|---|---|', ...rows].join('\n');
}

function renderStates(machine: AnyStateMachine): string {
  const root = machine.root as unknown as Node;
  return allNodes(root)
    .slice(1)
    .map((n) => {
      const entry = (n.entry as readonly { type?: string }[])
        .map((a) => a?.type)
        .filter((a): a is string => !!a && !a.startsWith('xstate.'));
      const extra = entry.length ? ` Entry: ${entry.map((e) => `\`${e}\``).join(', ')}.` : '';
      return `- \`${local(n, root)}\` (${n.type})${n.description ? `: ${n.description}` : ''}${extra}`;
    })
    .join('\n');
}

function renderActors(machine: AnyStateMachine): string {
  const root = machine.root as unknown as Node;
  const lines = allNodes(root)
    .flatMap((n) =>
      n.invoke.map((i) =>
        n === root
          ? `- \`${i.id}\` invoked by the machine itself (lives until the final state)`
          : `- \`${i.id}\` invoked by \`${local(n, root)}\` (lives as long as that state)`,
      ),
    );
  return lines.length > 0 ? lines.join('\n') : 'None.';
}

export function renderDoc(doc: MachineDoc): string {
  const delays = Object.keys((doc.machine.implementations as { delays: Record<string, unknown> }).delays);
  return `<!-- Generated by \`npm run docs\` from the machine definition. Do not edit by hand. -->
# ${doc.title}

${doc.intro}

\`\`\`mermaid
${renderMermaid(doc.machine)}
\`\`\`

## States

${renderStates(doc.machine)}

## Actors

${renderActors(doc.machine)}

## Named delays

${delays.map((d) => `- \`${d}\``).join('\n')}

## Transitions

${renderTable(doc.machine)}
`;
}

/** Docs that embed a generated diagram between `<!-- machine:FILE:start … -->` and `<!-- machine:FILE:end -->`. */
export const EMBEDDING_DOCS = ['architecture.md'];

/** Replaces each embedded diagram block in `text` with the current rendering. */
export function embedDiagrams(text: string): string {
  return text.replace(
    /(<!-- machine:([\w.-]+):start[^>]*-->\n)[\s\S]*?(<!-- machine:\2:end -->)/g,
    (_all, start: string, file: string, end: string) => {
      const doc = MACHINES.find((d) => d.file === file);
      if (!doc) throw new Error(`unknown machine doc ${file}`);
      return `${start}\`\`\`mermaid\n${renderMermaid(doc.machine)}\n\`\`\`\n${end}`;
    },
  );
}

async function main(): Promise<void> {
  const check = process.argv.includes('--check');
  let stale = 0;
  for (const [module, render] of [[DIAGRAM_MODULE, renderDiagramModule], [SESSION_DIAGRAM_MODULE, renderSessionDiagramModule]] as const) {
    const path = fileURLToPath(new URL(`../${module}`, import.meta.url));
    const text = await render();
    if (check) {
      if (!existsSync(path) || readFileSync(path, 'utf8') !== text) {
        console.error(`${module} differs from the machine: run npm run docs`);
        stale++;
      }
    } else {
      writeFileSync(path, text);
      console.log(`wrote ${module}`);
    }
  }
  for (const file of EMBEDDING_DOCS) {
    const path = fileURLToPath(new URL(`../docs/${file}`, import.meta.url));
    const current = readFileSync(path, 'utf8');
    const text = embedDiagrams(current);
    if (current === text) continue;
    if (check) {
      console.error(`docs/${file} embeds a stale diagram: run npm run docs`);
      stale++;
    } else {
      writeFileSync(path, text);
      console.log(`updated docs/${file}`);
    }
  }
  for (const doc of MACHINES) {
    const path = fileURLToPath(new URL(`../docs/${doc.file}`, import.meta.url));
    const text = renderDoc(doc);
    if (check) {
      let current = '';
      try {
        current = readFileSync(path, 'utf8');
      } catch {
        current = '';
      }
      if (current !== text) {
        console.error(`docs/${doc.file} differs from the machine: run npm run docs`);
        stale++;
      }
    } else {
      writeFileSync(path, text);
      console.log(`wrote docs/${doc.file}`);
    }
  }
  process.exit(stale ? 1 : 0);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) await main();
