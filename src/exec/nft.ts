// Typed wrapper over nftables (`nft`): whole tables are replaced atomically with one `nft -f -`.
import { InvalidRequestError } from '../shared/errors.js';
import { ExecError, type Runner } from './runner.js';

/** nftables address families vmlink uses. */
export type NftFamily = 'inet' | 'ip' | 'ip6' | 'bridge' | 'netdev';

function assertTableName(name: string): void {
  if (!/^[A-Za-z][A-Za-z0-9_-]{0,62}$/.test(name))
    throw new InvalidRequestError(`invalid nftables table name ${JSON.stringify(name)}`);
}

/** The `nft -f` input that atomically swaps table `family name` for `body` (a full `table ... { }` block). */
export function replaceTableScript(family: NftFamily, name: string, body: string): string {
  assertTableName(name);
  // Declaring the table first makes `delete` succeed when it does not exist yet; one file = one transaction.
  return `table ${family} ${name} {}\ndelete table ${family} ${name}\n${body.endsWith('\n') ? body : `${body}\n`}`;
}

/** The `nft -f` input that deletes a table whether or not it exists. */
export function deleteTableScript(family: NftFamily, name: string): string {
  assertTableName(name);
  return `table ${family} ${name} {}\ndelete table ${family} ${name}\n`;
}

/** nftables bound to one runner and (optionally) one network namespace. */
export class Nft {
  constructor(
    private readonly runner: Runner,
    /** Namespace every command runs in; undefined = the caller's own. */
    readonly netns?: string,
  ) {}

  /** Loads a ruleset file from stdin (`nft -f -`) as one transaction. */
  async load(script: string): Promise<void> {
    await this.runner.run(['nft', '-f', '-'], { netns: this.netns, input: script });
  }

  /** Replaces table `family name` with `body` atomically (creates it when missing). */
  async replaceTable(family: NftFamily, name: string, body: string): Promise<void> {
    await this.load(replaceTableScript(family, name, body));
  }

  /** Deletes the table; a missing table is not an error. */
  async deleteTable(family: NftFamily, name: string): Promise<void> {
    await this.load(deleteTableScript(family, name));
  }

  /** The table as `nft list table` prints it, or undefined when it does not exist. */
  async listTable(family: NftFamily, name: string): Promise<string | undefined> {
    assertTableName(name);
    const r = await this.runner.run(['nft', 'list', 'table', family, name], {
      netns: this.netns,
      allowFailure: true,
    });
    if (r.code === 0) return r.stdout;
    if (/No such file or directory/.test(r.stderr)) return undefined;
    throw new ExecError(r);
  }

  /** Tables present, as `family name`. */
  async listTables(): Promise<{ family: string; name: string }[]> {
    const r = await this.runner.run(['nft', 'list', 'tables'], { netns: this.netns });
    return r.stdout
      .split('\n')
      .map((l) => /^table (\S+) (\S+)/.exec(l.trim()))
      .filter((m): m is RegExpExecArray => m !== null)
      .map((m) => ({ family: m[1]!, name: m[2]! }));
  }
}
