import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command } from 'commander';
import { describe, expect, it } from 'vitest';
import { addSecretCommands, readSecretValue } from './secret-commands.js';

describe('vmlink secret', () => {
  it('reads the value from stdin or a file, dropping one trailing newline only', () => {
    expect(readSecretValue(undefined, () => Buffer.from('pass\n')).toString()).toBe('pass');
    expect(readSecretValue(undefined, () => Buffer.from('pass\r\n')).toString()).toBe('pass');
    expect(readSecretValue(undefined, () => Buffer.from('pass\n\n')).toString()).toBe('pass\n');
    const dir = mkdtempSync(join(tmpdir(), 'vmlink-secret-cli-'));
    try {
      writeFileSync(join(dir, 'k'), Buffer.from([0, 1, 2, 255]));
      expect([...readSecretValue(join(dir, 'k'))]).toEqual([0, 1, 2, 255]);
      expect(() => readSecretValue(join(dir, 'missing'))).toThrow(/cannot read the secret value from/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    expect(() => readSecretValue(undefined, () => Buffer.from('\n'))).toThrow(/1 to 4096 bytes \(got 0\)/);
    expect(() => readSecretValue(undefined, () => Buffer.alloc(5000, 1))).toThrow(/1 to 4096 bytes/);
  });

  it('takes no value as an argument: `set` has only the name and --from-file', () => {
    const program = new Command();
    addSecretCommands(program, () => {
      throw new Error('no API in this test');
    });
    const set = program.commands
      .find((c) => c.name() === 'secret')!
      .commands.find((c) => c.name() === 'set')!;
    expect(set.registeredArguments.map((a) => a.name())).toEqual(['name']);
    expect(set.options.map((o) => o.long)).toEqual(['--from-file', '--json']);
  });
});
