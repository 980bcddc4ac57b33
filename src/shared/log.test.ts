import { Writable } from 'node:stream';
import { pino } from 'pino';
import { expect, it } from 'vitest';
import { LOG_REDACT } from './log.js';

it('redacts secret values wherever a VM action or a batch carries them', () => {
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk, _enc, done) {
      lines.push(String(chunk));
      done();
    },
  });
  const log = pino({ redact: LOG_REDACT }, sink);
  const secrets = [{ name: 'k', value: 'c2VjcmV0LXZhbHVl' }];
  log.warn({ action: { kind: 'vm.start', name: 'web1', secrets } }, 'one');
  log.warn({ batch: { actions: [{ kind: 'vm.create', secrets }] } }, 'batch');
  log.warn({ secrets }, 'top');
  log.warn({ req: { body: { value: 'c2VjcmV0LXZhbHVl' } } }, 'body');
  expect(lines).toHaveLength(4);
  for (const l of lines) {
    expect(l).not.toContain('c2VjcmV0LXZhbHVl');
    expect(l).toContain('[secret]');
  }
});
