/**
 * Headless Chromium for the browser tests: Debian's chromium driven by
 * playwright-core (nothing is downloaded). One browser per test file, closed
 * when the file's tests end; a page per test in its own context (its own
 * cookies and cache: a separate user), closed after the test.
 * The flags are the ones this machine needs: without the background-networking
 * ones Chromium keeps trying to reach Google's hosts on a closed network.
 */
import { after, type TestContext } from 'node:test';
import { chromium, type Browser, type Page } from 'playwright-core';
import { pace } from './pace.ts';

export const CHROMIUM = process.env.INTEROP_CHROMIUM ?? '/usr/bin/chromium';
export const CHROMIUM_INSTALL = 'apt-get install chromium';
const ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];
/** Bound for every single browser wait: 10 s of an idle machine, scaled by the measured pace (test/helpers/pace.ts). */
export const WAIT = { timeout: pace.scaled(10_000) };

let browserPromise: Promise<Browser> | null = null;

/** The file's browser, launched on first use. */
export function browser(): Promise<Browser> {
  browserPromise ??= chromium.launch({ executablePath: CHROMIUM, args: ARGS, timeout: pace.scaled(30_000) });
  return browserPromise;
}

after(async () => {
  if (browserPromise) await (await browserPromise).close();
});

/** A new page in its own browser context, closed after the test; page errors go to the test's diagnostics. */
export async function newPage(t: TestContext, viewport = { width: 900, height: 760 }): Promise<Page> {
  const context = await (await browser()).newContext({ viewport });
  t.after(() => context.close());
  const page = await context.newPage();
  page.on('pageerror', (err) => t.diagnostic(`page error: ${err.message}`));
  return page;
}
