#!/usr/bin/env node
// Bundles the browser client (src/client/browser.ts, with xstate and the
// machines) into one ES module for <script type="module">:
// dist/browser/ws-supervisor-client.js (+ .map), served by the demo server at
// /ws-supervisor-client.js. The build fails if anything Node-only (`ws`, a
// `node:` module or another Node builtin) would end up in it, or if the
// bundle is left with an import of its own.
import { builtinModules } from 'node:module';
import { statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const root = fileURLToPath(new URL('../', import.meta.url));
const outfile = `${root}dist/browser/ws-supervisor-client.js`;

const escape = (s) => s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
const NODE_ONLY = new RegExp(`^(node:.*|ws|ws/.*|(${builtinModules.map(escape).join('|')})(/.*)?)$`);

/** Fails the build on any import of a Node-only module, naming the importer. */
const browserOnly = {
  name: 'browser-only',
  setup(b) {
    b.onResolve({ filter: NODE_ONLY }, (args) => ({
      errors: [{ text: `"${args.path}" is Node-only and must not be imported by the browser bundle (imported by ${args.importer})` }],
    }));
  },
};

const result = await build({
  entryPoints: [`${root}src/client/browser.ts`],
  outfile,
  bundle: true,
  format: 'esm',
  platform: 'browser',
  target: 'es2020',
  minify: true,
  sourcemap: true,
  legalComments: 'eof',
  metafile: true,
  logLevel: 'warning',
  plugins: [browserOnly],
}).catch(() => process.exit(1)); // esbuild has already printed the errors

const output = Object.entries(result.metafile.outputs).find(([path]) => path.endsWith('.js'));
const leftover = output?.[1].imports ?? [];
if (leftover.length > 0) {
  console.error(`build-browser: the bundle still imports ${leftover.map((i) => i.path).join(', ')}`);
  process.exit(1);
}
const inputs = Object.keys(result.metafile.inputs);
const fromNodeModules = [...new Set(inputs.filter((p) => p.includes('node_modules/')).map((p) => p.split('node_modules/')[1].split('/')[0]))];
console.log(
  `build-browser: ${outfile.slice(root.length)} ${(statSync(outfile).size / 1024).toFixed(1)} KiB ` +
    `(${inputs.length} inputs; packages: ${fromNodeModules.join(', ') || 'none'})`,
);
