import { pino } from 'pino';

/** Process-wide structured logger; level from VMLINK_LOG (default `warn`, `silent` in tests). */
// Logs go to stderr: stdout belongs to the CLI's tables and JSON.
export const log = pino(
  {
    level: process.env.VMLINK_LOG ?? (process.env.VITEST ? 'silent' : 'warn'),
    base: { pid: process.pid },
    // Secret values travel in VM actions (`secrets`) and secret bodies (`value`): a logged request never shows them.
    redact: {
      paths: [
        'secrets',
        '*.secrets',
        '*.*.secrets',
        'actions[*].secrets',
        '*.actions[*].secrets',
        'req.body.value',
      ],
      censor: '[secret]',
    },
  },
  pino.destination(2),
);

/** Logger type, for modules that take a child logger. */
export type Logger = typeof log;
