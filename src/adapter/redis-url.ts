/**
 * The one parser of Redis URLs, shared by the CLI (`--redis`, exit 2 on a bad
 * value) and createRedisAdapter (RangeError), so that both accept exactly the
 * same URLs. It has no dependency on ioredis: the CLI checks its flags without
 * loading the client.
 *
 * We build the ioredis options ourselves rather than hand it the string:
 * ioredis copies every query parameter into its options (`?enableOfflineQueue=1`
 * would quietly break R12) and selects a database it cannot select without
 * failing the connection (D6). The credentials never reach a log: `display` is
 * the URL with the password masked.
 */

/** Where and how to connect, from a `redis://` or `rediss://` URL. */
export interface RedisTarget {
  host: string;
  port: number;
  username: string | undefined;
  password: string | undefined;
  /** The database of the presence keys (the path: `/`, `/0`, `/3`, …). Pub/sub channels span every database. */
  db: number;
  /** rediss:// */
  tls: boolean;
  /** `?family=4|6`: the IP family to resolve the host to. */
  family: 4 | 6 | undefined;
  /** The URL, canonical, with the password masked: safe to print. */
  display: string;
}

/** A URL the adapter cannot use; the message never contains the password. */
export class RedisUrlError extends RangeError {}

const QUERY_PARAMS = ['password', 'db', 'family'] as const;
/** Query parameter names that may hold a secret: masked wherever a URL is shown. */
const SECRET_PARAM = /pass|secret|token|auth|key|cred/i;
/** Redis caps `databases` far below this; anything larger is a typo. */
const MAX_DB = 2 ** 31 - 1;

/**
 * Parses and checks a Redis URL: `redis://[[user]:password@]host[:port][/db]`
 * or `rediss://…` (TLS); the scheme is case-insensitive and surrounding
 * whitespace is ignored. Query parameters: `password`, `db`, `family` only.
 * Throws RedisUrlError naming the problem.
 */
export function parseRedisUrl(value: unknown): RedisTarget {
  if (typeof value !== 'string') throw new RedisUrlError(`must be a string, got ${typeof value}`);
  const text = value.trim();
  if (/\s/.test(text)) throw new RedisUrlError(`must not contain whitespace, got ${JSON.stringify(maskText(text))}`);
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new RedisUrlError(`is not a valid URL (redis://host:port[/db]), got ${JSON.stringify(maskText(text))}`);
  }
  const shown = JSON.stringify(maskText(text)); // as given (not normalised), credentials masked
  if (url.protocol === 'unix:') throw new RedisUrlError(`is a unix socket, which is not supported: use redis://host:port, got ${shown}`);
  if (url.protocol !== 'redis:' && url.protocol !== 'rediss:') {
    throw new RedisUrlError(`must start with redis:// or rediss://, got ${shown}`);
  }
  if (url.hostname === '') throw new RedisUrlError(`has no host (e.g. redis://127.0.0.1:6379), got ${shown}`);
  if (url.hash !== '') throw new RedisUrlError(`must not have a #fragment, got ${shown}`);
  let db = parseDb(url.pathname, shown);
  const params = new Map<string, string>();
  for (const [name, v] of url.searchParams) {
    if (!(QUERY_PARAMS as readonly string[]).includes(name)) {
      throw new RedisUrlError(`has an unsupported query parameter ${JSON.stringify(name)} (accepted: ${QUERY_PARAMS.join(', ')}), got ${shown}`);
    }
    if (params.has(name)) throw new RedisUrlError(`has the query parameter ${JSON.stringify(name)} twice, got ${shown}`);
    params.set(name, v);
  }
  const queryDb = params.get('db');
  if (queryDb !== undefined) {
    const fromQuery = parseDb(`/${queryDb}`, shown);
    if (url.pathname.length > 1 && fromQuery !== db) throw new RedisUrlError(`gives database ${db} in the path but ${fromQuery} in ?db=, got ${shown}`);
    db = fromQuery;
  }
  let family: 4 | 6 | undefined;
  const familyParam = params.get('family');
  if (familyParam !== undefined) {
    if (familyParam !== '4' && familyParam !== '6') throw new RedisUrlError(`has a ?family= other than 4 or 6, got ${shown}`);
    family = familyParam === '4' ? 4 : 6;
  }
  const username = url.username ? decode(url.username, shown) : undefined;
  const userPassword = url.password ? decode(url.password, shown) : undefined;
  const queryPassword = params.get('password') || undefined;
  if (userPassword !== undefined && queryPassword !== undefined) {
    throw new RedisUrlError(`gives the password twice (before @ and in ?password=), got ${shown}`);
  }
  const password = userPassword ?? queryPassword;
  // new URL keeps the brackets of an IPv6 literal; a socket wants the bare address.
  const host = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
  const port = url.port === '' ? 6379 : Number(url.port);
  const auth = username !== undefined || password !== undefined ? `${username ? url.username : ''}${password !== undefined ? ':***' : ''}@` : '';
  const display = `${url.protocol}//${auth}${url.hostname}:${port}/${db}${family ? `?family=${family}` : ''}`;
  return { host, port, username, password, db, tls: url.protocol === 'rediss:', family, display };
}

function parseDb(path: string, shown: string): number {
  if (path === '' || path === '/') return 0;
  const m = /^\/([0-9]+)$/.exec(path);
  if (!m || Number(m[1]) > MAX_DB) {
    throw new RedisUrlError(`has a bad path: it must be / or /<database number ≥ 0> (e.g. redis://127.0.0.1:6379/2), got ${JSON.stringify(decodeSafe(path))} in ${shown}`);
  }
  return Number(m[1]);
}

function decode(part: string, shown: string): string {
  try {
    return decodeURIComponent(part);
  } catch {
    throw new RedisUrlError(`has bad percent-encoding in the user or password, got ${shown}`);
  }
}

function decodeSafe(part: string): string {
  try {
    return decodeURIComponent(part);
  } catch {
    return part;
  }
}

/**
 * Any URL-ish string with its credentials masked (the password before @ and
 * every query parameter whose name looks like a secret), for messages and logs.
 * Never throws; a string it cannot parse is masked by pattern.
 */
export function redactRedisUrl(text: string): string {
  let url: URL;
  try {
    url = new URL(text.trim());
  } catch {
    return maskText(text);
  }
  if (url.password) url.password = '***';
  for (const name of [...url.searchParams.keys()]) if (SECRET_PARAM.test(name)) url.searchParams.set(name, '***');
  // URLSearchParams encodes '*' as %2A: keep the mask readable.
  return url.toString().replace(/%2A%2A%2A/g, '***');
}

/** Masks `:secret@` and `secret-ish=value` in a string that is not a URL. */
function maskText(text: string): string {
  return text.replace(/(\/\/[^/@:\s]*:)[^@/\s]*@/g, '$1***@').replace(/([?&][^=&\s]*(?:pass|secret|token|auth|key|cred)[^=&\s]*=)[^&#\s]*/gi, '$1***');
}
