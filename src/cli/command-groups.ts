// The command modules of `vmlink`, each loaded only when the command line names one of its commands: a CLI call
// imported every module of the tree (~15 % of its start here; tests and scripts call it thousands of times).
// `vmlink --help`, no command, an option first or a name no group declares load them all, in this order, so the
// top-level help and commander's suggestions for a mistyped command stay exactly those of the whole tree.
import type { Command } from 'commander';
import type { Api } from './io.js';
import type { Processes } from './program.js';

/** Adds a group's commands to the program (or extends top-level commands already there). */
export type AddCommands = (program: Command, api: Api, processes: Processes) => void;

/** One module's share of the tree: the top-level commands its adder makes or extends, and how to load it. */
export interface CommandGroup {
  names: readonly string[];
  load: () => Promise<AddCommands>;
}

/**
 * Every group, in the order the tree was always built (the help lists top-level commands in this order, and `vm`'s
 * subcommands in the order its four adders run). command-groups.test.ts checks each group's `names` against what its
 * adder really touches.
 */
export const COMMAND_GROUPS: readonly CommandGroup[] = [
  {
    names: ['lab'],
    load: async () => {
      const { addLabCommands } = await import('./spec-commands.js');
      return (p, api, processes) => addLabCommands(p, api, processes.relay);
    },
  },
  {
    names: ['plan', 'apply', 'destroy'],
    load: async () => (await import('./spec-commands.js')).addSpecCommands,
  },
  { names: ['status', 'events'], load: async () => (await import('./view-commands.js')).addStatusCommands },
  { names: ['verify'], load: async () => (await import('./spec-commands.js')).addVerifyCommand },
  { names: ['network'], load: async () => (await import('./view-commands.js')).addNetworkCommands },
  {
    names: ['security-group'],
    load: async () => (await import('./view-commands.js')).addSecurityGroupCommands,
  },
  { names: ['lb'], load: async () => (await import('./lb-commands.js')).addLbCommands },
  { names: ['vm'], load: async () => (await import('./view-commands.js')).addVmCommands },
  { names: ['ui'], load: async () => (await import('./console-commands.js')).addUiCommand },
  { names: ['vm'], load: async () => (await import('./volume-commands.js')).addVmSnapshotCommands },
  { names: ['vm'], load: async () => (await import('./migrate-commands.js')).addMigrateCommands },
  { names: ['vm'], load: async () => (await import('./move-disk-commands.js')).addMoveDiskCommands },
  {
    names: ['pool', 'volume', 'image'],
    load: async () => (await import('./volume-commands.js')).addVolumeCommands,
  },
  { names: ['capacity'], load: async () => (await import('./capacity-commands.js')).addCapacityCommand },
  { names: ['host'], load: async () => (await import('./host-commands.js')).addHostCommands },
  { names: ['ha'], load: async () => (await import('./ha-commands.js')).addHaCommands },
  { names: ['balance'], load: async () => (await import('./balance-commands.js')).addBalanceCommands },
  { names: ['cluster'], load: async () => (await import('./cluster-commands.js')).addClusterCommands },
  { names: ['token', 'audit'], load: async () => (await import('./token-commands.js')).addTokenCommands },
  { names: ['secret'], load: async () => (await import('./secret-commands.js')).addSecretCommands },
  { names: ['drill'], load: async () => (await import('./drill-commands.js')).addDrillCommands },
  { names: ['alerts'], load: async () => (await import('./alert-commands.js')).addAlertCommands },
  { names: ['backup'], load: async () => (await import('./backup-commands.js')).addBackupCommands },
  { names: ['restore'], load: async () => (await import('./backup-commands.js')).addRestoreCommands },
  {
    names: ['doctor'],
    load: async () => {
      const { addDoctorCommand } = await import('./doctor.js');
      return (p, api, processes) => addDoctorCommand(p, api, processes.localChecks);
    },
  },
];

/** The top-level commands program.ts defines itself (the controller and agent processes): they need no group. */
export const BUILT_IN: readonly string[] = ['daemon', 'agent'];

/**
 * The top-level command `args` (the command line after `node vmlink`) runs, when it is the first word and a group
 * declares it or it is built in; undefined otherwise (help, a mistyped name, an option first): then the whole tree is needed.
 * `--socket` is the program's only option that takes a value.
 */
export function commandNamed(args: readonly string[]): string | undefined {
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === '--socket') i++;
    else if (a.startsWith('--socket=')) continue;
    else if (a.startsWith('-')) return undefined;
    else return BUILT_IN.includes(a) || COMMAND_GROUPS.some((g) => g.names.includes(a)) ? a : undefined;
  }
  return undefined;
}

/** The groups the command line needs (all of them unless it names one known top-level command), in tree order. */
export function groupsFor(args: readonly string[] | undefined): readonly CommandGroup[] {
  const name = args && commandNamed(args);
  return name === undefined ? COMMAND_GROUPS : COMMAND_GROUPS.filter((g) => g.names.includes(name));
}
