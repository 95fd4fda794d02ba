// The dashboard's diagram is laid out at build time (scripts/render-diagram.ts, with elkjs, a
// devDependency) and committed as src/observe/dashboard/connection-diagram.ts, so that no
// application installs or loads a layout engine. Here the machine is laid out again: a change
// to machines/connection.machine.ts that is not followed by `npm run docs` fails, naming the fix.
// (test/observe/dashboard.test.ts checks the served SVG against the machine's states and transitions.)
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { DIAGRAM_MODULE, renderDiagramModule, renderSessionDiagramModule, SESSION_DIAGRAM_MODULE } from '../../scripts/render-diagram.ts';
import { CONNECTION_DIAGRAM_SVG } from '../../src/observe/dashboard/connection-diagram.ts';
import { SESSION_DIAGRAM_SVG } from '../../src/observe/dashboard/session-diagram.ts';

test('the committed dashboard diagram is the current layout of the connection machine (run npm run docs if not)', async () => {
  const committed = readFileSync(fileURLToPath(new URL(`../../${DIAGRAM_MODULE}`, import.meta.url)), 'utf8');
  const fresh = await renderDiagramModule();
  assert.ok(fresh === committed, `${DIAGRAM_MODULE} is stale: run npm run docs`);
  assert.match(CONNECTION_DIAGRAM_SVG, /^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg"[\s\S]*<\/svg>$/);
});

test('the committed session diagram (the dashboard shows it with the detached sessions) is the current layout of the session machine', async () => {
  const committed = readFileSync(fileURLToPath(new URL(`../../${SESSION_DIAGRAM_MODULE}`, import.meta.url)), 'utf8');
  const fresh = await renderSessionDiagramModule();
  assert.ok(fresh === committed, `${SESSION_DIAGRAM_MODULE} is stale: run npm run docs`);
  assert.match(SESSION_DIAGRAM_SVG, /^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg"[\s\S]*aria-label="session machine"[\s\S]*<\/svg>$/);
});
