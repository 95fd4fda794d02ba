// A node:test reporter for scripts/run-tests.mjs: per test file, the time its
// top-level tests took (their duration_ms summed; the file's process start and
// module loading are not in it) and how many there were, one line per file:
// `<ms> <tests> <file>`. The runner prints the slowest ones after the run, so
// where the suite's time goes is in every log (docs/testing.md, "Wall time").
export default async function* fileTimes(source) {
  const files = new Map();
  for await (const event of source) {
    if ((event.type !== 'test:pass' && event.type !== 'test:fail') || event.data.nesting !== 0) continue;
    const file = event.data.file ?? '(unknown file)';
    const entry = files.get(file) ?? { ms: 0, tests: 0 };
    entry.ms += event.data.details?.duration_ms ?? 0;
    entry.tests++;
    files.set(file, entry);
  }
  for (const [file, { ms, tests }] of files) yield `${ms.toFixed(0)} ${tests} ${file}\n`;
}
