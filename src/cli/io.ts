// Helpers every command shares: reading a spec file, printing human or JSON output.
import { readFileSync } from 'node:fs';
import { VmlinkError } from '../shared/errors.js';
import type { HttpClient } from '../shared/http/client.js';

/** The controller API client of this invocation (made once `--socket` is parsed). */
export type Api = () => HttpClient;

/** A spec file as the API takes it: its text and its name for messages. */
export const readSpec = (file: string) => {
  try {
    return { spec: readFileSync(file, 'utf8'), source: file };
  } catch (e) {
    throw new VmlinkError(
      'invalid',
      `cannot read spec file ${file}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (e as Error).message}`,
    );
  }
};
/** Prints a line on stdout. */
export const out = (s: string) => process.stdout.write(`${s}\n`);
/** Where progress lines go: stderr when stdout carries JSON. */
export const progress = (json: boolean) => (line: string) =>
  (json ? process.stderr : process.stdout).write(`${line}\n`);
/** Prints `value` as JSON, or the human rendering. */
export const emit = (json: boolean, value: unknown, human: () => string) =>
  out(json ? JSON.stringify(value, null, 2) : human());
