/**
 * The command line, parsed in process (src/cli/args.ts): the subcommands, a help
 * text per subcommand (and -h everywhere), --version, and the client's --url
 * next to --address/--path, and every bad flag a usage error naming it, with
 * the exact stderr and exit status main.ts gives it (usageExit). Four spawned
 * CLIs, one per exit path of main.ts, check that main.ts acts on what
 * parseCommand decides: the version (exit 0), a usage error (exit 2, the
 * command's help named), help (exit 0), no command (the usage, exit 2).
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import {
  CLIENT_USAGE,
  parseClientArgs,
  parseCommand,
  helpHint,
  packageVersion,
  SERVER_USAGE,
  USAGE,
  UsageError,
  usageExit,
  type ClientCliOptions,
  type Command,
} from '../../src/cli/args.ts';
import { REPO_ROOT, runCli } from '../helpers/cli.ts';

const VERSION = (JSON.parse(readFileSync(`${REPO_ROOT}package.json`, 'utf8')) as { version: string }).version;

function helpOf(argv: string[]): { text: string; exitCode: number } {
  const c: Command = parseCommand(argv, {});
  if (c.kind !== 'help') assert.fail(`${argv.join(' ')} asks for help, got ${c.kind}`);
  return { text: c.text, exitCode: c.exitCode };
}

/** What main.ts prints and exits with for argv (usageExit of what parseCommand throws). */
function usageOf(argv: string[]): { exitCode: number; stderr: string } {
  let thrown: unknown;
  try {
    parseCommand(argv, {});
  } catch (err) {
    thrown = err;
  }
  const exit = usageExit(thrown, argv);
  assert.ok(exit !== null, `a usage error for ${argv.join(' ')}: ${String(thrown)}`);
  return exit;
}

function clientUrl(args: string[]): string {
  return (parseClientArgs(args) as ClientCliOptions).url;
}

describe('ws-supervisor: commands, help, version', () => {
  test('--version and -v print the package.json version', () => {
    assert.match(VERSION, /^\d+\.\d+\.\d+/);
    assert.equal(packageVersion(), VERSION);
    assert.deepEqual(parseCommand(['--version'], {}), { kind: 'version' });
    assert.deepEqual(parseCommand(['-v'], {}), { kind: 'version' });
    // Anything after it is a usage error naming it, as for every other command (it printed the version before).
    for (const argv of [['--version', 'extra'], ['-v', 'extra'], ['--version', '--path', '/x']]) {
      const exit = usageOf(argv);
      assert.equal(exit.exitCode, 2, argv.join(' '));
      assert.equal(exit.stderr, `ws-supervisor: ${argv[0]} takes no arguments, got ${JSON.stringify(argv.slice(1).join(' '))}\nRun 'ws-supervisor --help' for the flags.\n`);
    }
  });

  test('top-level help lists the subcommands and how to get their flags; no command is a usage error (exit 2) that prints it', () => {
    for (const argv of [['--help'], ['-h'], ['help']]) {
      assert.deepEqual(helpOf(argv), { text: USAGE, exitCode: 0 }, argv.join(' '));
    }
    assert.deepEqual(helpOf([]), { text: USAGE, exitCode: 2 });
    for (const text of ['server', 'client', '--version', 'ws-supervisor server --help', 'ws-supervisor client --help']) {
      assert.ok(USAGE.includes(text), `top-level help mentions ${text}`);
    }
    assert.doesNotMatch(USAGE, /--ping-interval|--interval/, 'no subcommand flags at the top level');
  });

  test('each subcommand has its own help, reached by --help, -h and `help COMMAND`', () => {
    for (const [command, text] of [['server', SERVER_USAGE], ['client', CLIENT_USAGE]] as const) {
      for (const argv of [[command, '--help'], [command, '-h'], ['help', command], [command, '--path', '/x', '-h']]) {
        assert.deepEqual(helpOf(argv), { text, exitCode: 0 }, argv.join(' '));
      }
      assert.match(text, new RegExp(`^Usage: ws-supervisor ${command} \\[flags\\]`));
    }
    assert.notEqual(SERVER_USAGE, CLIENT_USAGE);
    // Each lists its own flags and not the other's.
    for (const flag of [
      '--address', '--path', '--www', '--ping-interval', '--pong-timeout', '--write-timeout', '--close-timeout', '--headers-timeout',
      '--max-payload', '--send-queue', '--max-connections', '--max-message-rate', '--allowed-origins', '--log-level',
      '--inspect', '--inspect-port', '--redis', '--redis-env', '--workers', '--local-broadcast', '--max-restarts', '--restart-period',
      '--max-connections-per-address', '--max-pending-per-address', '--trust-proxy', '--redis-max-in-flight', '--redis-history',
      '--sessions', '--resume-window', '--session-store',
    ]) {
      assert.ok(SERVER_USAGE.includes(flag), `server help lists ${flag}`);
      if (flag !== '--address' && flag !== '--path') assert.ok(!CLIENT_USAGE.includes(flag), `client help does not list ${flag}`);
    }
    for (const flag of ['--url', '--interval', '--session']) {
      assert.ok(CLIENT_USAGE.includes(flag), `client help lists ${flag}`);
      assert.ok(!SERVER_USAGE.includes(`${flag} `), `server help does not list ${flag}`);
    }
    for (const text of [SERVER_USAGE, CLIENT_USAGE]) assert.match(text, /-h, --help/);
    for (const text of ['ws-supervisor server', 'ws-supervisor client', '--address', '--path', '--interval', '--help', 'SIGINT']) {
      assert.ok(CLIENT_USAGE.includes(text), `client help mentions ${text}`);
    }
    assert.ok(CLIENT_USAGE.split('\n').length < 30, `client help: ${CLIENT_USAGE.split('\n').length} lines`);
  });

  test('unknown commands and stray words are usage errors naming them; the hint points at the right help', () => {
    assert.throws(() => parseCommand(['serve'], {}), (e) => e instanceof UsageError && /unknown command "serve"/.test(e.message));
    assert.throws(() => parseCommand(['help', 'nope'], {}), (e) => e instanceof UsageError && /"nope"/.test(e.message));
    assert.throws(() => parseCommand(['help', 'server', 'x'], {}), UsageError);
    assert.throws(() => parseCommand(['client', 'extra'], {}), (e) => e instanceof UsageError && /extra/.test(e.message));
    assert.equal(helpHint(['server', '--bogus']), 'ws-supervisor server --help');
    assert.equal(helpHint(['client']), 'ws-supervisor client --help');
    assert.equal(helpHint(['serve']), 'ws-supervisor --help');
    assert.equal(helpHint([]), 'ws-supervisor --help');
  });

  test('server and client commands carry their parsed options', () => {
    const server = parseCommand(['server', '--address', '127.0.0.1:0', '--path', '/ws'], {});
    assert.equal(server.kind, 'server');
    assert.equal(server.kind === 'server' && server.options.path, '/ws');
    const client = parseCommand(['client', '--url', 'wss://example.com/ws', '--interval', '500'], {});
    assert.deepEqual(client, { kind: 'client', options: { url: 'wss://example.com/ws', interval: 500, session: false } });
    const withSession = parseCommand(['client', '--session'], {});
    assert.equal(withSession.kind === 'client' && withSession.options.session, true);
    // Sessions (docs/sessions.md): on with --sessions, the window with --resume-window.
    const sessions = parseCommand(['server', '--sessions', '--resume-window', '5000'], {});
    assert.deepEqual(sessions.kind === 'server' && sessions.options.sessions, { resumeWindow: 5000 });
    const plain = parseCommand(['server'], {});
    assert.equal(plain.kind === 'server' && plain.options.sessions, undefined);
    assert.equal(plain.kind === 'server' && plain.options.sessionStore, null);
    // With Redis at hand the store defaults to Redis (every worker and server sharing it resumes the sessions); memory on request.
    const store = (args: string[]) => {
      const c = parseCommand(['server', '--sessions', ...args], {});
      return c.kind === 'server' ? c.options.sessionStore : null;
    };
    assert.equal(store([]), 'memory');
    assert.equal(store(['--redis', 'redis://127.0.0.1:6379']), 'redis');
    assert.equal(store(['--redis', 'redis://127.0.0.1:6379', '--workers', '2']), 'redis');
    assert.equal(store(['--redis', 'redis://127.0.0.1:6379', '--session-store', 'memory']), 'memory');
    // --redis-history turns the adapter's content recovery on; off by default.
    const history = (args: string[]) => {
      const c = parseCommand(['server', ...args], {});
      return c.kind === 'server' ? c.options.redisHistory : null;
    };
    assert.equal(history(['--redis', 'redis://127.0.0.1:6379']), false);
    assert.equal(history(['--redis', 'redis://127.0.0.1:6379', '--redis-history']), true);
  });
});

describe('ws-supervisor client: --url, --address, --path', () => {
  test('--url takes ws:// and wss:// URLs as given (port, path, query kept)', () => {
    assert.equal(clientUrl(['--url', 'ws://127.0.0.1:9000/server']), 'ws://127.0.0.1:9000/server');
    assert.equal(clientUrl(['--url', 'wss://example.com/ws?token=abc']), 'wss://example.com/ws?token=abc');
    assert.equal(clientUrl(['--url', 'ws://[::1]:8080/x']), 'ws://[::1]:8080/x');
    assert.equal(clientUrl(['--url', 'WSS://Example.com']), 'wss://example.com/', 'normalised as the WHATWG URL parser does');
  });

  test('--address and --path still build a ws:// URL (defaults localhost:8080/server)', () => {
    assert.equal(clientUrl([]), 'ws://localhost:8080/server');
    assert.equal(clientUrl(['--address', '127.0.0.1:9000', '--path', '/ws']), 'ws://127.0.0.1:9000/ws');
    assert.equal(clientUrl(['--address', ':9000']), 'ws://localhost:9000/server');
    assert.equal(clientUrl(['--address', '[::1]:9000']), 'ws://[::1]:9000/server');
  });

  const bad: Array<{ args: string[]; mentions: string[] }> = [
    { args: ['--url', 'ws://a:1/x', '--address', 'b:2'], mentions: ['--url', '--address'] },
    { args: ['--url', 'ws://a:1/x', '--path', '/y'], mentions: ['--url', '--path'] },
    { args: ['--url', 'http://localhost:8080/server'], mentions: ['--url', 'ws://', 'wss://', 'http://localhost:8080/server'] },
    { args: ['--url', 'localhost:8080'], mentions: ['--url', 'localhost:8080'] },
    { args: ['--url', 'not a url'], mentions: ['--url', 'not a url'] },
    { args: ['--url', 'ws://localhost:0/x'], mentions: ['--url', 'port'] },
    { args: ['--url', 'ws://localhost:8080/x#frag'], mentions: ['--url', '#frag'] },
    { args: ['--url'], mentions: ['--url'] },
  ];
  for (const { args, mentions } of bad) {
    test(`client ${args.join(' ')} is a usage error naming ${mentions.join(', ')}`, () => {
      assert.throws(
        () => parseCommand(['client', ...args], {}),
        (e: unknown) => {
          assert.ok(e instanceof UsageError, String(e));
          for (const m of mentions) assert.ok(e.message.includes(m), `${JSON.stringify(e.message)} names ${m}`);
          return true;
        },
      );
    });
  }
});

describe('bad flags are usage errors (exit 2) that name the flag and the value, and point at the command\'s help', () => {
  const bad: Array<{ args: string[]; mentions: string[] }> = [
    { args: ['server', '--ping-interval', 'abc'], mentions: ['--ping-interval', 'abc'] },
    { args: ['server', '--ping-interval', '0'], mentions: ['--ping-interval', '"0"'] },
    { args: ['server', '--ping-interval', '2147483648'], mentions: ['--ping-interval must be at most 2147483647, got 2147483648'] },
    { args: ['server', '--close-timeout', '99999999999'], mentions: ['--close-timeout must be at most 2147483647'] },
    { args: ['server', '--headers-timeout', '0'], mentions: ['--headers-timeout'] },
    { args: ['server', '--address', 'nope'], mentions: ['--address', 'nope'] },
    { args: ['server', '--address', '127.0.0.1:70000'], mentions: ['--address', '70000'] },
    { args: ['server', '--www', '/nonexistent'], mentions: ['--www', '/nonexistent'] },
    { args: ['server', '--allowed-origins', 'app.example'], mentions: ['--allowed-origins', 'app.example'] },
    { args: ['server', '--bogus'], mentions: ['--bogus'] },
    { args: ['server', '--resume-window', '5000'], mentions: ['--resume-window needs --sessions'] },
    { args: ['server', '--sessions', '--resume-window', '0'], mentions: ['--resume-window', '"0"'] },
    { args: ['server', '--sessions', '--workers', '2', '--local-broadcast'], mentions: ['--sessions', 'single process', '--redis'] },
    { args: ['server', '--sessions', '--session-store', 'memory', '--workers', '2', '--redis', 'redis://127.0.0.1:6379'], mentions: ['memory store', '--workers'] },
    { args: ['server', '--session-store', 'redis', '--redis', 'redis://127.0.0.1:6379'], mentions: ['--session-store needs --sessions'] },
    { args: ['server', '--sessions', '--session-store', 'redis'], mentions: ['--session-store redis needs --redis'] },
    { args: ['server', '--redis-history'], mentions: ['--redis-history needs --redis'] },
    { args: ['server', '--sessions', '--session-store', 'disk'], mentions: ['--session-store', 'memory or redis', '"disk"'] },
    { args: ['serve'], mentions: ['unknown command', 'serve'] },
    { args: ['client', '--interval', 'abc'], mentions: ['--interval', 'abc'] },
    { args: ['client', '--interval', '0'], mentions: ['--interval', '"0"'] },
    { args: ['client', '--interval', '-5'], mentions: ['--interval'] },
    { args: ['client', '--interval', '1.5'], mentions: ['--interval', '1.5'] },
    { args: ['client', '--address', 'nope'], mentions: ['--address', 'nope'] },
    { args: ['client', '--address', '127.0.0.1:70000'], mentions: ['--address', '70000'] },
    { args: ['client', '--address', '127.0.0.1:0'], mentions: ['--address', '127.0.0.1:0'] },
    { args: ['client', '--path', 'server'], mentions: ['--path', 'server'] },
    { args: ['client', '--bogus'], mentions: ['--bogus'] },
    { args: ['client', 'extra'], mentions: ['extra'] },
  ];
  for (const { args, mentions } of bad) {
    test(`${args.join(' ')}: ${mentions.join(', ')}`, () => {
      assert.throws(
        () => parseCommand(args, {}),
        (e: unknown) => {
          assert.ok(e instanceof UsageError, String(e));
          for (const m of mentions) assert.ok(e.message.includes(m), `${JSON.stringify(e.message)} names ${m}`);
          return true;
        },
      );
      const command = args[0] === 'serve' ? null : args[0];
      assert.equal(helpHint(args), command ? `ws-supervisor ${command} --help` : 'ws-supervisor --help');
      // What main.ts prints and exits with (usageExit): one line naming the problem, one pointing at the help.
      const exit = usageOf(args);
      assert.equal(exit.exitCode, 2);
      for (const m of mentions) assert.ok(exit.stderr.includes(m), `stderr names ${m}: ${exit.stderr}`);
      const hint = command ? `ws-supervisor ${command} --help` : 'ws-supervisor --help';
      assert.match(exit.stderr, new RegExp(`^ws-supervisor: [^\\n]+\\nRun '${hint}' for the flags\\.\\n$`));
    });
  }
});

describe('the CLI process: one run per exit path of main.ts', () => {
  // Everything above runs in-process; these show main.ts acts on what parseCommand
  // decides, byte for byte: version, a usage error, help (exit 0), no command (exit 2).
  test('--version exits 0; a usage error exits 2 with exactly usageExit\'s text; server --help exits 0 with its help; no command exits 2 with the top-level help', { timeout: 60_000 }, async () => {
    const conflictArgs = ['client', '--url', 'ws://127.0.0.1:1/x', '--address', '127.0.0.1:2'];
    const [version, conflict, help, none] = await Promise.all([
      runCli(['--version']),
      runCli(conflictArgs),
      runCli(['server', '--help']),
      runCli([]),
    ]);
    assert.equal(version.code, 0, version.stderr);
    assert.equal(version.stdout, `${VERSION}\n`);
    assert.equal(conflict.timedOut, false, 'the client must not start');
    assert.equal(conflict.code, 2, conflict.stderr);
    assert.equal(conflict.stderr, usageOf(conflictArgs).stderr);
    assert.match(conflict.stderr, /^ws-supervisor: --url and --address /);
    assert.match(conflict.stderr, /Run 'ws-supervisor client --help'/);
    assert.doesNotMatch(conflict.stdout, /connecting to/);
    assert.equal(help.code, 0, help.stderr);
    assert.equal(help.stdout, SERVER_USAGE);
    assert.doesNotMatch(help.stdout, /listening/);
    assert.equal(none.code, 2);
    assert.equal(none.stdout, USAGE);
  });
});
