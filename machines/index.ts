export * from './connection.machine.ts';
export * from './close-codes.ts';
