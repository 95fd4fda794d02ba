/**
 * The logging contract every room shares (the server, the adapters, the CLI).
 * It sits below them all so that none has to import another for a type.
 */

/**
 * A structured logger (pino's API: `pino()` fits as it is). Every line about a
 * connection carries its id (`conn`). Lifecycle transitions log at debug,
 * unexpected closures at warn, handler errors at error.
 */
export interface Logger {
  debug(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
  child(bindings: Record<string, unknown>): Logger;
  isLevelEnabled?(level: string): boolean;
}
