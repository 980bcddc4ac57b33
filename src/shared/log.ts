import { pino } from 'pino';

/** Process-wide structured logger; level from VMLINK_LOG (default `warn`, `silent` in tests). */
// Logs go to stderr: stdout belongs to the CLI's tables and JSON.
/** Secret values travel in VM actions (`secrets`) and secret bodies (`value`): a logged object never shows them. */
export const LOG_REDACT = {
  paths: [
    'secrets',
    '*.secrets',
    '*.*.secrets',
    'actions[*].secrets',
    '*.actions[*].secrets',
    'req.body.value',
  ],
  censor: '[secret]',
};

export const log = pino(
  {
    level: process.env.VMLINK_LOG ?? (process.env.VITEST ? 'silent' : 'warn'),
    base: { pid: process.pid },
    redact: LOG_REDACT,
  },
  pino.destination(2),
);

/** Logger type, for modules that take a child logger. */
export type Logger = typeof log;
