// `vmlink <command> --help` for every command in the tree, in this process: each command line parsed by a fresh
// program exactly as bin/vmlink.js parses it (main.ts -> runCli -> createCli, which loads the modules of the named
// command only), commander printing its help and asking to exit 0, caught here instead of ending the process. The tree is read from the help texts themselves
// (the "Commands:" section of each), so a command the help does not list is not reached either.
// (bin/vmlink.js printing that help as a process of its own: main.test.ts.)
import { type Command, CommanderError } from 'commander';
import { describe, expect, it } from 'vitest';
import { treeOnlyProcesses } from './processes.test-util.js';
import { createCli } from './program.js';

const processes = treeOnlyProcesses;

/** Every command of the tree under `cmd`, itself included. */
const commandsUnder = (cmd: Command): Command[] => [cmd, ...cmd.commands.flatMap(commandsUnder)];

/** What `vmlink ...path --help` prints and the exit code commander asks for. */
async function help(path: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const program = await createCli(processes, [...path, '--help']);
  for (const c of commandsUnder(program))
    c.exitOverride().configureOutput({
      writeOut: (s) => {
        stdout += s;
      },
      writeErr: (s) => {
        stderr += s;
      },
    });
  try {
    await program.parseAsync(['node', 'vmlink', ...path, '--help']);
    return { code: 0, stdout, stderr: `${stderr}(no help printed)` };
  } catch (e) {
    if (!(e instanceof CommanderError)) throw e;
    return { code: e.exitCode, stdout, stderr };
  }
}

/** The subcommand names a commander help text lists under "Commands:" (help itself aside). */
const subcommands = (text: string): string[] => {
  const section = text.split(/^Commands:$/m)[1] ?? '';
  return [...section.matchAll(/^ {2}([a-z][\w-]*)/gm)].map((m) => m[1]!).filter((n) => n !== 'help');
};

describe('--help', () => {
  it('every command in the tree from `vmlink --help` has help with a usage line and a description', async () => {
    const seen: string[] = [];
    let level: string[][] = [[]];
    while (level.length > 0) {
      const next: string[][] = [];
      for (const path of level) {
        const r = await help(path);
        const name = ['vmlink', ...path].join(' ');
        expect(r.code, `${name} --help: ${r.stderr}`).toBe(0);
        expect(r.stdout, name).toMatch(new RegExp(`^Usage: ${name}( |$)`, 'm'));
        const description = r.stdout.split('\n\n')[1]?.trim() ?? '';
        expect(description, `${name} has a description`).not.toMatch(/^(Options:|Arguments:|$)/);
        seen.push(name);
        next.push(...subcommands(r.stdout).map((c) => [...path, c]));
      }
      level = next;
    }
    // The walk reached the whole tree: every command commander knows of, each listed by its parent's help.
    const all = commandsUnder(await createCli(processes)).map((c) => {
      const names: string[] = [];
      for (let x: Command | null = c; x; x = x.parent) names.unshift(x.name());
      return names.join(' ');
    });
    expect(seen.sort()).toEqual(all.filter((n) => !/ help$/.test(n)).sort());
    // The commands the README shows are all in the tree.
    const shown =
      'status,vm list,vm exec,vm console,vm stop,plan,apply,verify,doctor,network list,network show,events,destroy,lab up,lab down,daemon';
    for (const cmd of shown.split(',')) expect(seen).toContain(`vmlink ${cmd}`);
  });
});
