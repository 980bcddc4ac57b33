// `vmlink secret set|list|delete`: controller-kept secrets (keys of encrypted disks and volumes, iSCSI CHAP
// passwords). A value is never an argument: argv is visible to every user of the machine (/proc/<pid>/cmdline) and
// lands in shell history.
import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { OkSchema } from '../controller/wire.js';
import { SecretListSchema, SecretSetAnswerSchema } from '../controller/wire-access.js';
import { VmlinkError } from '../shared/errors.js';
import { SECRET_VALUE_MAX_BYTES } from '../shared/limits.js';
import { type Api, emit } from './io.js';
import { table } from './render.js';

/** The value from `file` or stdin; one trailing newline is dropped (what `echo` and editors add). */
export function readSecretValue(
  file: string | undefined,
  stdin: () => Buffer = () => readFileSync(0),
): Buffer {
  let value: Buffer;
  try {
    value = file === undefined ? stdin() : readFileSync(file);
  } catch (e) {
    throw new VmlinkError(
      'invalid',
      `cannot read the secret value from ${file ?? 'stdin'}: ${(e as Error).message}`,
    );
  }
  if (value.at(-1) === 0x0a) value = value.subarray(0, value.at(-2) === 0x0d ? -2 : -1);
  if (value.length === 0 || value.length > SECRET_VALUE_MAX_BYTES)
    throw new VmlinkError(
      'invalid',
      `a secret value must be 1 to ${SECRET_VALUE_MAX_BYTES} bytes (got ${value.length})`,
    );
  return value;
}

/** `vmlink secret ...`. */
export function addSecretCommands(program: Command, api: Api): void {
  const secret = program
    .command('secret')
    .description(
      'secrets the controller keeps encrypted (disk and volume keys, iSCSI CHAP passwords) and hands to a host only with a step that needs them',
    );
  secret
    .command('set')
    .description(
      'create or replace secret NAME; the value comes from stdin or --from-file, never from an argument',
    )
    .argument('<name>', "secret name (as an encryption.secret or a pool's chap.secret names it)")
    .option('--from-file <file>', 'read the value from this file instead of stdin')
    .option('--json', 'machine-readable output')
    .action(async (name: string, o: { fromFile?: string; json?: boolean }) => {
      const value = readSecretValue(o.fromFile);
      const r = await api().post(
        `/v1/secrets/${name}`,
        { value: value.toString('base64') },
        SecretSetAnswerSchema,
      );
      emit(!!o.json, r, () => `secret ${r.name} ${r.created ? 'created' : 'replaced'}`);
    });
  secret
    .command('list')
    .description(
      'secrets: name, when created and changed, which VM disks, volumes and pools of the applied spec use them',
    )
    .option('--json', 'machine-readable output')
    .action(async (o: { json?: boolean }) => {
      const r = await api().get('/v1/secrets', SecretListSchema);
      emit(!!o.json, r, () =>
        table(
          ['NAME', 'CREATED', 'UPDATED', 'USED BY'],
          r.map((s) => [s.name, s.created, s.updated, s.usedBy.join(', ') || '-']),
        ),
      );
    });
  secret
    .command('delete')
    .description('delete secret NAME (refused while the applied spec uses it)')
    .argument('<name>', 'secret name')
    .option('--json', 'machine-readable output')
    .action(async (name: string, o: { json?: boolean }) => {
      const r = await api().delete(`/v1/secrets/${name}`, OkSchema);
      emit(!!o.json, r, () => `secret ${name} deleted`);
    });
}
