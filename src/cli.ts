#!/usr/bin/env node
/**
 * `ws-supervisor server [flags]`: the ready-made server. This process is the
 * server itself, so SIGTERM/SIGINT reach it directly and drain it (R18).
 */
import { startDemoServer } from './demo-server.ts';
import { parseServerArgs, USAGE, UsageError } from './cli-args.ts';

async function runServer(args: string[]): Promise<void> {
  const options = parseServerArgs(args);
  if (options === 'help') {
    process.stdout.write(USAGE);
    return;
  }
  const demo = await startDemoServer(options);
  const { address, port } = demo.address;
  const shown = address.includes(':') ? `[${address}]` : address;
  console.log(`ws-supervisor: listening on http://${shown}:${port}/ (WebSocket ws://${shown}:${port}${options.path})`);
  let signalled = false;
  const onSignal = (signal: NodeJS.Signals): void => {
    if (signalled) {
      console.error(`ws-supervisor: ${signal} again, exiting without waiting`);
      process.exit(1);
    }
    signalled = true;
    const live = demo.supervisor.size;
    console.log(`ws-supervisor: ${signal}: draining ${live} connection(s)`);
    demo.close().then(
      () => {
        console.log('ws-supervisor: drained, bye');
        process.exit(0);
      },
      (err: unknown) => {
        console.error('ws-supervisor: drain failed:', err);
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
}

async function main(argv: string[]): Promise<void> {
  const [command, ...rest] = argv;
  if (command === 'server') return runServer(rest);
  if (command === undefined || command === '--help' || command === 'help') {
    process.stdout.write(USAGE);
    if (command === undefined) process.exitCode = 2;
    return;
  }
  throw new UsageError(`unknown command ${JSON.stringify(command)} (expected: server)`);
}

main(process.argv.slice(2)).catch((err: unknown) => {
  if (err instanceof UsageError) {
    console.error(`ws-supervisor: ${err.message}\nRun 'ws-supervisor server --help' for the flags.`);
    process.exit(2);
  }
  const e = err as NodeJS.ErrnoException;
  if (e.code === 'EADDRINUSE' || e.code === 'EACCES' || e.code === 'EADDRNOTAVAIL' || e.code === 'ENOTFOUND') {
    console.error(`ws-supervisor: cannot listen: ${e.message}`);
    process.exit(1);
  }
  console.error(err);
  process.exit(1);
});
