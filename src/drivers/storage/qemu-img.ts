// qemu-img invocations every qcow2 backend shares (VM-directory disks, dir and nfs pools): the LUKS key handed over
// on stdin, never in argv, a file or a log; the retry of a LUKS creation whose key-derivation timing failed; and
// `qemu-img info` read with bounded output into a checked shape.
import { rm } from 'node:fs/promises';
import { z } from 'zod';
import { ExecError, type Runner } from '../../exec/runner.js';
import { BadResponseError } from '../../shared/errors.js';
import type { ObservedSnapshot } from '../../shared/storage.js';

/**
 * argv running the qemu-img command `argv` (`['qemu-img', SUB, ...rest]`) with a `secret` object `id` whose base64
 * value qemu-img reads from stdin. The runner's stdin is a socket, which qemu-img cannot open as /dev/stdin (ENXIO),
 * so `cat` turns it into a pipe; the arguments pass as "$@", never through the shell's parser.
 */
export function keyObjectOnStdin(argv: readonly string[], id: string): string[] {
  const [bin, sub, ...rest] = argv;
  return [
    'sh',
    '-c',
    'cat | exec "$@"',
    'sh',
    bin!,
    sub!,
    '--object',
    `secret,id=${id},file=/dev/stdin,format=base64`,
    ...rest,
  ];
}

/**
 * `qemu-img create` (or `convert`) argv making a LUKS-encrypted qcow2 whose key (base64) qemu-img reads from stdin:
 * it never appears in argv (/proc/<pid>/cmdline), a file or a log.
 */
export function withKeyOnStdin(create: readonly string[], id: string): string[] {
  const [bin, sub, ...rest] = create;
  return keyObjectOnStdin([bin!, sub!, '-o', `encrypt.format=luks,encrypt.key-secret=${id}`, ...rest], id);
}

/** How often an encrypted volume's creation is tried when qemu-img could not time its key derivation. */
export const LUKS_CREATE_TRIES = 5;

/**
 * Runs `create` (a `qemu-img create` or `convert` writing `path`) as a LUKS qcow2 keyed by `keyBase64` (on stdin).
 * qemu-img picks the key's PBKDF2 iterations by timing a round on the thread's CPU clock; where that clock is
 * tick-based a fast round can read 0 ms, and qemu-img gives up ("Unable to get accurate CPU usage"). That is chance,
 * not a fault: measure again. A failed try's file is removed, so a volume is never left half-made.
 */
export async function createRetryingLuks(
  runner: Runner,
  create: readonly string[],
  keyBase64: string,
  path: string,
  signal?: AbortSignal,
): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      await runner.run(withKeyOnStdin(create, 'key0'), { input: keyBase64, ...(signal ? { signal } : {}) });
      return;
    } catch (e) {
      await rm(path, { force: true });
      const stderr = e instanceof ExecError ? e.result.stderr : '';
      if (attempt >= LUKS_CREATE_TRIES || !stderr.includes('Unable to get accurate CPU usage')) throw e;
    }
  }
}

/** Most bytes of `qemu-img info` output read (64 snapshots and 8 LUKS key slots fit in far less). */
export const QEMU_IMG_INFO_MAX_BYTES = 256 * 1024;

// What of `qemu-img info --output=json` vmlink uses; the rest passes through unread. Bounded: names and counts.
const imageInfoSchema = z
  .object({
    format: z.string().max(32),
    'virtual-size': z.number().int().nonnegative(),
    'actual-size': z.number().int().nonnegative().optional(),
    encrypted: z.boolean().optional(),
    'backing-filename': z.string().max(4096).optional(),
    'backing-filename-format': z.string().max(32).optional(),
    snapshots: z
      .array(
        z
          .object({
            name: z.string().max(256),
            'date-sec': z.number(),
            'vm-state-size': z.number().int().nonnegative().optional(),
          })
          .passthrough(),
      )
      .max(1024)
      .optional(),
    'format-specific': z
      .object({
        type: z.string().max(32),
        data: z
          .object({ 'data-file': z.string().max(4096).optional() })
          .passthrough()
          .optional(),
      })
      .passthrough()
      .optional(),
  })
  .passthrough();

/** The checked part of `qemu-img info` of one image. */
export type ImageInfo = z.output<typeof imageInfoSchema>;

/**
 * `qemu-img info` of the image at `path` alone (qemu-img opens no backing file for it), in `format` (never probed
 * unless undefined), `-U` so that an image a running VM holds can be read (unless `shared` is false: then such an
 * image fails with qemu-img's lock error); output bounded and checked.
 */
export async function imageInfo(
  runner: Runner,
  path: string,
  format: 'qcow2' | 'raw' | undefined,
  signal?: AbortSignal,
  shared = true,
): Promise<ImageInfo> {
  const r = await runner.run(
    ['qemu-img', 'info', ...(shared ? ['-U'] : []), '--output=json', ...(format ? ['-f', format] : []), path],
    { maxOutputBytes: QEMU_IMG_INFO_MAX_BYTES, ...(signal ? { signal } : {}) },
  );
  let json: unknown;
  try {
    json = JSON.parse(r.stdout);
  } catch {
    throw new BadResponseError(`qemu-img info ${path}: output is not JSON`, path);
  }
  const parsed = imageInfoSchema.safeParse(json);
  if (!parsed.success)
    throw new BadResponseError(
      `qemu-img info ${path}: unexpected output at ${parsed.error.issues[0]!.path.join('.')}`,
      path,
    );
  return parsed.data;
}

/** The snapshots of an image as `qemu-img info` lists them (it needs no key to). */
export function snapshotsOf(info: ImageInfo): ObservedSnapshot[] {
  return (info.snapshots ?? []).map((s) => ({
    name: s.name,
    createdAt: new Date(s['date-sec'] * 1000).toISOString(),
    ...(s['vm-state-size'] ? { vmStateBytes: s['vm-state-size'] } : {}),
  }));
}
