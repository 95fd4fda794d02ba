export { Supervisor, createSupervisor, type SupervisorEvents } from './supervisor.ts';
export { Connection, supervisedConnectionMachine, assertSendableCloseCode, type DeadLetter, type ConnectionSnapshot } from './connection.ts';
export { Hub, type BroadcastResult, type Traffic } from './hub.ts';
export { AdmissionError, type Refusal, type RefusalReason } from './admission.ts';
export { DEFAULTS, type SupervisorOptions, type TimingOptions, type SendQueueOptions, type OriginPolicy, type AuthenticateHook, type MessageHandler, type Logger } from './options.ts';
export { SupervisorMetrics, type MetricsSource } from './metrics.ts';
export type { DeadLetterReason, Outbound } from './writer.ts';
export * from '../machines/index.ts';
export { createDashboard, type Dashboard, type DashboardOptions, type DashboardSnapshot, type ConnectionRow, type ClosureRow } from './dashboard/index.ts';
