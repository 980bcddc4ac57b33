// Writes src/shared/__golden__/backup-retention.json: random retention cases (seeded) with what the real
// `restic forget --dry-run --json` kept and removed. Run: TZ=UTC npx tsx scripts/retention-golden.ts (needs restic).

import { execFileSync } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { type RetentionCase, randomCase, resticForget, seeded } from '../test/helpers/restic-forget.js';

const rand = seeded(12);
const cases: RetentionCase[] = [];
for (let i = 0; i < 32; i++) cases.push(randomCase(rand, `random-${i}`, 6 + Math.floor(rand() * 10)));
const outcomes = await resticForget(cases, 3);
const version = execFileSync('restic', ['version'], { encoding: 'utf8' }).trim();
await mkdir('src/shared/__golden__', { recursive: true });
await writeFile(
  'src/shared/__golden__/backup-retention.json',
  `${JSON.stringify({ restic: version, cases: cases.map((c, i) => ({ ...c, restic: outcomes[i] })) }, null, 1)}\n`,
);
console.log(`${cases.length} cases, ${cases.reduce((n, c) => n + c.times.length, 0)} snapshots`);
