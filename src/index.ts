export { Supervisor, createSupervisor, type SupervisorEvents, type BroadcastOptions, type PublishOptions, type ClusterSize } from './server/supervisor.ts';
export { Connection, supervisedConnectionMachine, assertSendableCloseCode, type DeadLetter, type ConnectionSnapshot, type ConnectionStats, type Traffic } from './server/connection.ts';
export { Hub, type BroadcastResult, type HubOptions } from './server/hub.ts';
export { MAX_TOPIC_BYTES, TopicError, validateTopic, type TopicErrorCode } from './protocol/topics.ts';
export { MemoryAdapter, MemoryBus, createMemoryAdapter, type MemoryAdapterOptions } from './adapter/memory.ts';
export type { Adapter, AdapterHost, AdapterMessage, AdapterStatus, AdapterDeadLetter, AdapterDeadLetterReason, AdapterFailureReason, AdapterSendFailure, AdapterMissed, AdapterMissedCause, NodeInfo } from './adapter/types.ts';
// Redis URL checks without ioredis (the CLI uses them for --redis).
export { parseRedisUrl, redactRedisUrl, RedisUrlError, type RedisTarget } from './adapter/redis-url.ts';
// The Redis adapter (and ioredis) load only when imported: 'ws-supervisor/redis'.
export type { RedisAdapter, RedisAdapterOptions } from './adapter/redis.ts';
export { AdmissionError, type Refusal, type RefusalReason } from './server/admission.ts';
export { DEFAULTS, type SupervisorOptions, type TimingOptions, type SendQueueOptions, type OriginPolicy, type AuthenticateHook, type MessageHandler, type FairnessOptions, type BudgetOptions } from './server/options.ts';
export type { Logger } from './base/logger.ts';
// Thrown when a feature's optional peer dependency (ioredis, @statelyai/inspect) is not installed.
export { MissingPeerError } from './base/optional-peer.ts';
export { SupervisorMetrics, type MetricsSource } from './server/metrics.ts';
// Sessions (docs/sessions.md): the server side, the store contract and the in-memory store.
export { SESSION_DEFAULTS, type SessionOptions, type SessionLifecycleEvent, type SessionInfo } from './server/sessions.ts';
export { createMemorySessionStore, MemorySessionStore, SESSION_STORE_DEFAULTS, type MemorySessionStoreOptions } from './adapter/memory-session-store.ts';
export type { SessionStore, SessionStoreHost, SessionStoreStats, SessionRecord, SessionMessage, StoredMessage, SessionDeadLetter, SessionDeadLetterReason, SessionFanOut, FanOutDelivery, FanOutFence, FanOutResult, JsonValue, ResumeClaim, VerifyResult, AppendResult, ReadResult, AckResult, RequestVerdict, CreatedSession } from './adapter/session-store.ts';
export type { ResumeFailureReason } from './protocol/session.ts';
export type { DeadLetterReason, Outbound } from './server/writer.ts';
export * from '../machines/index.ts';
export { createDashboard, type Dashboard, type DashboardOptions, type DashboardSnapshot, type ConnectionRow, type ClosureRow } from './observe/dashboard/index.ts';
// Admission limits: the open-file check and the trustProxy option's type.
export { OpenFileLimitError, FD_RESERVE, readOpenFileLimit } from './server/fd-limit.ts';
export type { TrustProxy } from './server/options.ts';
