export * from './connection.machine.ts';
export * from './close-codes.ts';
export * from './client.machine.ts';
export * from './backoff.ts';
export * from './session.machine.ts';
export * from './pending-request.machine.ts';
export * from './gap-reader.machine.ts';
