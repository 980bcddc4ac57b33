// Golden-file comparison for this folder's unit tests: exact match; UPDATE_GOLDEN=1 rewrites the file.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'vitest';
import type { RecordingRunner } from '../../../exec/runner.js';

const dir = join(dirname(fileURLToPath(import.meta.url)), '__golden__');

/** Asserts `text` equals `__golden__/<name>` exactly (writes it when UPDATE_GOLDEN=1 or missing under UPDATE). */
export function expectGolden(name: string, text: string): void {
  const file = join(dir, name);
  if (process.env.UPDATE_GOLDEN === '1') {
    mkdirSync(dir, { recursive: true });
    writeFileSync(file, text);
    return;
  }
  if (!existsSync(file))
    throw new Error(`golden file ${file} missing; run with UPDATE_GOLDEN=1 and review it`);
  expect(text).toBe(readFileSync(file, 'utf8'));
}

/** The recorded commands with batch and nft input inlined, for golden files. */
export function transcript(runner: RecordingRunner): string {
  return runner.calls
    .map((c, i) => `${runner.lines()[i]}${c.input ? `\n${c.input.trimEnd().replace(/^/gm, '    | ')}` : ''}`)
    .join('\n')
    .concat('\n');
}
