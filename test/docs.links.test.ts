/**
 * The docs stand on their own: every relative link in README.md and docs/*.md
 * resolves to a file of this repository (and a #fragment to a heading of it,
 * slugged as GitHub and npm do), every repository path the docs name in
 * backticks exists, nothing points at files outside the repository, and
 * docs/rules.md states every rule R1–R24 and maps each to what proves it.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { dirname, join, normalize, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../', import.meta.url));
const DOCS = ['README.md', ...readdirSync(join(ROOT, 'docs')).filter((f) => f.endsWith('.md')).sort().map((f) => `docs/${f}`)];

/** The prose of a Markdown file: fenced code blocks blanked (line numbers kept) and inline code removed. */
function prose(text: string): string[] {
  let fenced = false;
  return text.split('\n').map((line) => {
    if (/^\s*```/.test(line)) {
      fenced = !fenced;
      return '';
    }
    return fenced ? '' : line.replace(/`[^`]*`/g, '');
  });
}

/** GitHub's (and npm's) heading ids: lower case, punctuation dropped, spaces to '-', repeats numbered. */
function anchorsOf(file: string): Set<string> {
  const seen = new Map<string, number>();
  const out = new Set<string>();
  let fenced = false;
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    if (/^\s*```/.test(line)) fenced = !fenced;
    const m = fenced ? null : /^#{1,6}\s+(.*?)\s*#*\s*$/.exec(line);
    if (!m) continue;
    const slug = m[1]!
      .replace(/\[([^\]]*)\]\([^)]*\)/g, '$1')
      .toLowerCase()
      .replace(/[^\p{L}\p{N}\p{M}\s_-]/gu, '')
      .replace(/\s/g, '-');
    const n = seen.get(slug) ?? 0;
    seen.set(slug, n + 1);
    out.add(n === 0 ? slug : `${slug}-${n}`);
  }
  return out;
}

interface Link {
  doc: string;
  line: number;
  target: string;
}

function linksOf(doc: string): Link[] {
  const out: Link[] = [];
  prose(readFileSync(join(ROOT, doc), 'utf8')).forEach((line, i) => {
    for (const m of line.matchAll(/\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)/g)) out.push({ doc, line: i + 1, target: m[1]! });
    for (const m of line.matchAll(/\b(?:href|src)="([^"]+)"/g)) out.push({ doc, line: i + 1, target: m[1]! });
  });
  return out;
}

const links = DOCS.flatMap(linksOf);
const relativeLinks = links.filter((l) => !/^[a-z][a-z0-9+.-]*:/i.test(l.target));

/** Why a relative link does not resolve, or null. */
function brokenBecause(link: Link): string | null {
  const [path, fragment] = link.target.split('#') as [string, string | undefined];
  const file = path === '' ? join(ROOT, link.doc) : normalize(join(ROOT, dirname(link.doc), decodeURI(path)));
  const inRepo = relative(ROOT, file);
  if (inRepo.startsWith('..')) return `points outside the repository (${inRepo})`;
  if (!existsSync(file)) return `no such file: ${inRepo}`;
  if (fragment === undefined || fragment === '') return null;
  if (!file.endsWith('.md') || statSync(file).isDirectory()) return null;
  const anchors = anchorsOf(file);
  return anchors.has(decodeURIComponent(fragment)) ? null : `no heading #${fragment} in ${inRepo} (it has: ${[...anchors].join(', ')})`;
}

describe('README.md and docs/ stand on their own', () => {
  test('the link extraction sees the docs\' links, and the checker refuses what is broken', () => {
    assert.ok(relativeLinks.length >= 40, `${relativeLinks.length} relative links found`);
    assert.ok(relativeLinks.some((l) => l.target.includes('#')), 'links with #fragments');
    const check = (target: string): string | null => brokenBecause({ doc: 'docs/recipes.md', line: 1, target });
    assert.equal(check('scaling.md#the-redis-adapter'), null);
    assert.equal(check('#graceful-shutdown-r18'), null);
    assert.equal(check('../README.md'), null);
    assert.match(check('scaling.md#no-such-heading') ?? '', /no heading #no-such-heading/);
    assert.match(check('nope.md') ?? '', /no such file: docs\/nope\.md/);
    assert.match(check('../../shared/RULES.md') ?? '', /outside the repository/);
    assert.deepEqual(linksOf('README.md').filter((l) => l.target === 'docs/rules.md').length, 1);
  });

  for (const doc of DOCS) {
    test(`${doc}: every relative link resolves (file, and heading for #fragments)`, () => {
      const broken = relativeLinks
        .filter((l) => l.doc === doc)
        .map((l) => [l, brokenBecause(l)] as const)
        .filter(([, why]) => why !== null)
        .map(([l, why]) => `${l.doc}:${l.line}: (${l.target}) ${why}`);
      assert.deepEqual(broken, []);
    });
  }

  test('every repository path the docs name in backticks exists', () => {
    const missing: string[] = [];
    for (const doc of DOCS) {
      readFileSync(join(ROOT, doc), 'utf8').split('\n').forEach((line, i) => {
        for (const m of line.matchAll(/`((?:src|test|machines|bench|scripts|docs|www|examples)\/[\w./-]*[\w/])`/g)) {
          const path = m[1]!;
          if (path.includes('*') || path.startsWith('bench/results/') || path.startsWith('bench/.build')) continue;
          if (!existsSync(join(ROOT, path))) missing.push(`${doc}:${i + 1}: ${path}`);
        }
      });
    }
    assert.deepEqual(missing, []);
  });

  test('nothing refers to material outside the repository', () => {
    const outside = /\.\.\/\.\.\/|shared\/|\bRULES\.md|\bFACTS\.md|source articles|design card|the issue's|\bissue \d+\b/;
    const found: string[] = [];
    for (const doc of DOCS) {
      readFileSync(join(ROOT, doc), 'utf8').split('\n').forEach((line, i) => {
        if (outside.test(line)) found.push(`${doc}:${i + 1}: ${line.trim()}`);
      });
    }
    assert.deepEqual(found, []);
  });

  test('nor does the code: sources, tests, scripts and benchmarks name what they rely on, not files or issues elsewhere', () => {
    const outside = /\.\.\/\.\.\/shared|shared\/RULES|\bRULES\.md|\bFACTS\.md|design card|the issue's|\b[Ii]ssue \d+\b/;
    const listed = execFileSync('git', ['ls-files', 'src', 'machines', 'scripts', 'bench', 'test', 'www', 'examples'], { cwd: ROOT, encoding: 'utf8' });
    const found: string[] = [];
    for (const file of listed.split('\n').filter((f) => /\.(ts|mts|mjs|js|html)$/.test(f) && f !== 'test/docs.links.test.ts')) {
      if (!existsSync(join(ROOT, file))) continue;
      readFileSync(join(ROOT, file), 'utf8').split('\n').forEach((line, i) => {
        if (outside.test(line)) found.push(`${file}:${i + 1}: ${line.trim()}`);
      });
    }
    assert.deepEqual(found, []);
  });

  test('docs/rules.md states every rule R1–R24 with its reason, and maps each to what implements and proves it', () => {
    const text = readFileSync(join(ROOT, 'docs/rules.md'), 'utf8');
    for (let n = 1; n <= 24; n++) {
      const stated = text.split('\n').filter((l) => l.startsWith(`- **R${n} `));
      assert.equal(stated.length, 1, `R${n} is stated once`);
      assert.match(stated[0]!, /\*Why:\* \S/, `R${n} gives its reason`);
      const row = text.split('\n').filter((l) => l.startsWith(`| **R${n}** `));
      assert.equal(row.length, 1, `R${n} has one row in the table`);
      const cells = row[0]!.split(' | ');
      assert.equal(cells.length, 3, `R${n}: rule | implemented by | proved by`);
      assert.ok(cells.every((c) => c.trim().length > 0), `R${n}: no empty cell`);
    }
  });
});
