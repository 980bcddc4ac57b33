// A vitest plugin (vitest.config.ts): STOP_SIGNAL asks a vitest run to stop as a user's cancel would. The running test
// goes on to its end (its context's signal is aborted), the tests not started are skipped, and the files' afterAll
// hooks then run, so that labs, namespaces, daemons and QEMU come down. SIGINT and SIGTERM cannot do this: vitest
// exits at once on them and its fork workers, killed or orphaned, never run afterAll (labs were left up).
// test/helpers/int-run.ts sends STOP_SIGNAL to each vitest it started when it gets SIGINT or SIGTERM itself.
import type { Plugin } from 'vitest/config';

/** Not used by node or vitest otherwise (SIGUSR1 starts node's inspector). */
export const STOP_SIGNAL = 'SIGUSR2';

let armed = false;

export function gracefulStop(): Plugin {
  return {
    name: 'vmlink:graceful-stop',
    configureVitest({ vitest }) {
      // Called once per project of the run: one handler for the process.
      if (armed) return;
      armed = true;
      process.once(STOP_SIGNAL, () => {
        process.stderr.write(
          `vitest: ${STOP_SIGNAL}: cancelling the run; afterAll hooks run when the current tests end\n`,
        );
        void vitest.cancelCurrentRun('keyboard-input');
      });
    },
  };
}
