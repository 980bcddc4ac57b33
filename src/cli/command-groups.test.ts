// The lazily loaded command tree is the whole tree where it matters: each group declares exactly the top-level
// commands its adder makes or extends, and a command line naming one command gets that command's help, options and
// subcommands exactly as the whole tree has them.
import { Command } from 'commander';
import { describe, expect, it } from 'vitest';
import { BUILT_IN, COMMAND_GROUPS, commandNamed, groupsFor } from './command-groups.js';
import { treeOnlyProcesses } from './processes.test-util.js';
import { createCli } from './program.js';

const processes = treeOnlyProcesses;
const api = () => {
  throw new Error('tree only: no API call');
};

/** A command's help and that of everything under it: what a user can see of it. */
const shape = (c: Command): string => [c.helpInformation(), ...c.commands.map(shape)].join('\n');

describe('command groups', () => {
  it("each group's names are exactly the top-level commands its adder makes or extends", async () => {
    const program = new Command('vmlink');
    for (const [i, group] of COMMAND_GROUPS.entries()) {
      const before = new Map(program.commands.map((c) => [c.name(), shape(c)]));
      (await group.load())(program, api, processes);
      const touched = program.commands.filter((c) => before.get(c.name()) !== shape(c)).map((c) => c.name());
      expect(touched.sort(), `group ${i} (${group.names.join(', ')})`).toEqual([...group.names].sort());
    }
  });

  it('a command line naming one command builds that command exactly as the whole tree has it', async () => {
    const whole = await createCli(processes);
    const names = whole.commands.map((c) => c.name());
    expect([...names].sort()).toEqual(
      [...new Set([...BUILT_IN, ...COMMAND_GROUPS.flatMap((g) => g.names)])].sort(),
    );
    for (const name of names) {
      const lazy = await createCli(processes, [name, 'list']);
      const want = whole.commands.find((c) => c.name() === name)!;
      const got = lazy.commands.find((c) => c.name() === name);
      expect(got && shape(got), name).toBe(shape(want));
      // Only what it needs: the built-in process commands and its own group(s).
      expect(lazy.commands.length, name).toBeLessThan(whole.commands.length);
    }
    expect(shape(await createCli(processes, ['--help']))).toBe(shape(whole));
  });

  it('finds the command after the program options; anything else loads the whole tree', () => {
    expect(commandNamed(['status'])).toBe('status');
    expect(commandNamed(['--socket', '/run/c.sock', 'vm', 'list'])).toBe('vm');
    expect(commandNamed(['--socket=/run/c.sock', 'apply', '-f', 'x.yaml'])).toBe('apply');
    expect(commandNamed([])).toBeUndefined();
    expect(commandNamed(['--help'])).toBeUndefined();
    expect(commandNamed(['-V'])).toBeUndefined();
    expect(commandNamed(['help', 'vm'])).toBeUndefined();
    expect(commandNamed(['stauts'])).toBeUndefined(); // commander suggests from the whole tree
    expect(commandNamed(['daemon', '--detach'])).toBe('daemon');
    expect(groupsFor(['agent', '--host', 'h1'])).toEqual([]); // built in program.ts: the agent loads no group
    expect(groupsFor(['vm', 'list']).length).toBe(4);
    expect(groupsFor(['stauts'])).toBe(COMMAND_GROUPS);
  });
});
