// Types of scripts/build.mjs (plain JavaScript: it runs on Node without tsx), for test/build.test.ts.
import type { ChildProcess, StdioOptions } from 'node:child_process';
export const STAMP: string;
export const runAsScript: boolean;
export const BUILD_INPUTS: readonly string[];
export const BUILD_STEPS: ReadonlyArray<{ builds: 'browser' | 'all'; command: string }>;
export function cleanDist(root?: string): void;
export function shell(command: string, stdio?: StdioOptions): ChildProcess;
export function treeHash(root: string, paths: readonly string[]): string;
export function writeStamp(root?: string): void;
export function staleBecause(root?: string): string | null;
