import {
  chmodSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { cliJson, runArgv, runCli } from '../helpers/cli.js';

// The real CLI against a real detached controller: values go in on stdin or from a file, never as arguments, and
// nothing the controller writes or answers holds them in clear.

const root = mkdtempSync('/tmp/vmlink-itsec-');
chmodSync(root, 0o755);
const env = {
  VMLINK_RUN_DIR: join(root, 'run'),
  VMLINK_STATE_DIR: join(root, 'state'),
  VMLINK_SOCKET: join(root, 'run', 'c.sock'),
};
const VALUE = 'cli-test passphrase 5d0a9e';
const BIN = join(process.cwd(), 'bin', 'vmlink.js');

beforeAll(async () => {
  mkdirSync(env.VMLINK_RUN_DIR, { recursive: true });
  const d = await runCli(['daemon', '--detach'], env);
  expect(d.code, d.stderr).toBe(0);
});

afterAll(async () => {
  await runCli(['daemon', '--stop'], env);
  rmSync(root, { recursive: true, force: true });
});

it('sets from stdin and from a file, lists without values, deletes; the key file is 0600 and the store holds ciphertext', async () => {
  const piped = await runArgv(
    ['sh', '-c', `printf '%s\\n' "$V" | "${process.execPath}" "${BIN}" secret set disk-key`],
    { ...env, V: VALUE },
    60_000,
  );
  expect(piped.code, piped.stderr).toBe(0);
  expect(piped.stdout.trim()).toBe('secret disk-key created');
  const file = join(root, 'other.key');
  writeFileSync(file, 'another value', { mode: 0o600 });
  expect((await runCli(['secret', 'set', 'other', '--from-file', file], env)).code).toBe(0);

  const list = await cliJson<Array<{ name: string; usedBy: string[] }>>(['secret', 'list'], env);
  expect(list.map((s) => [s.name, s.usedBy])).toEqual([
    ['disk-key', []],
    ['other', []],
  ]);
  const table = await runCli(['secret', 'list'], env);
  expect(table.stdout).toMatch(/^NAME\s+CREATED\s+UPDATED\s+USED BY/);

  // A value given as an argument is refused by the CLI itself.
  const arg = await runCli(['secret', 'set', 'x', VALUE], env);
  expect(arg.code).not.toBe(0);

  const key = join(env.VMLINK_STATE_DIR, 'secrets.key');
  expect(statSync(key).mode & 0o777).toBe(0o600);
  const stateFiles = readdirSync(env.VMLINK_STATE_DIR).filter((f) => f.startsWith('controller.db'));
  expect(stateFiles.length).toBeGreaterThan(0);
  for (const f of stateFiles) {
    const bytes = readFileSync(join(env.VMLINK_STATE_DIR, f));
    expect(bytes.includes(Buffer.from(VALUE))).toBe(false);
    expect(bytes.includes(Buffer.from(Buffer.from(VALUE).toString('base64')))).toBe(false);
  }
  const events = await runCli(['events', '--json'], env);
  expect(events.stdout).toContain('disk-key');
  expect(events.stdout).not.toContain(VALUE);

  expect((await runCli(['secret', 'delete', 'other'], env)).stdout.trim()).toBe('secret other deleted');
  expect((await cliJson<unknown[]>(['secret', 'list'], env)).length).toBe(1);
});
