// Spec loading: YAML text -> schema -> semantic validation, every problem reported at once.
import { readFileSync } from 'node:fs';
import { LineCounter, parseDocument } from 'yaml';
import type { z } from 'zod';
import { InvalidSpecError, type SpecIssue } from '../shared/errors.js';
import { type Placement, placeSpec } from './placement.js';
import { type Spec, SpecSchema, type UnplacedSpec } from './schema.js';
import { type ValidationMemo, validateSpecWith } from './validate/index.js';

export { validateSpec } from './validate/index.js';

/** Formats a zod path as `vms[1].nics[0].ip`. */
export function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const seg of path) {
    if (typeof seg === 'number') out += `[${seg}]`;
    else {
      const s = String(seg);
      out += /^[A-Za-z_][\w-]*$/.test(s) ? (out ? `.${s}` : s) : `[${JSON.stringify(s)}]`;
    }
  }
  return out;
}

function valueAt(root: unknown, path: readonly PropertyKey[]): unknown {
  let v: unknown = root;
  for (const seg of path) {
    if (v === null || typeof v !== 'object') return undefined;
    v = (v as Record<PropertyKey, unknown>)[seg];
  }
  return v;
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  if (typeof v === 'string')
    return `the string ${JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}...` : v)}`;
  return `${typeof v} ${String(v)}`;
}

const typeNames: Record<string, string> = {
  object: 'a mapping',
  array: 'a list',
  string: 'a string',
  number: 'a number',
};

/** Turns one zod issue into SpecIssues with readable messages; unknown keys get one issue each. */
function zodIssueToSpecIssues(issue: z.core.$ZodIssue, input: unknown): SpecIssue[] {
  const path = formatPath(issue.path);
  const value = valueAt(input, issue.path);
  switch (issue.code) {
    case 'unrecognized_keys': {
      const parent = value as Record<string, unknown> | undefined;
      const isNetwork = issue.path.length === 2 && issue.path[0] === 'networks';
      return issue.keys.map((key) => {
        const p = formatPath([...issue.path, key]);
        if (isNetwork && key === 'forwards' && parent && parent.mode !== 'nat')
          return {
            path: p,
            message: `forwards are only allowed on nat networks (this network is mode ${String(parent.mode)})`,
          };
        const multi = parent?.mode === 'vxlan' || parent?.mode === 'vlan';
        if (isNetwork && key === 'host' && multi)
          return {
            path: p,
            message: `${String(parent?.mode)} networks span hosts: write hosts: [${String(parent?.host)}, ...] (default: every host) instead of host`,
          };
        if (isNetwork && key === 'hosts' && !multi && parent?.mode !== undefined)
          return {
            path: p,
            message: `hosts is for vxlan and vlan networks; a ${String(parent.mode)} network lives on one host: write host: <name>, or use mode vxlan or vlan`,
          };
        if (isNetwork && (key === 'cidr' || key === 'gateway' || key === 'dhcp') && parent?.mode === 'bridge')
          return {
            path: p,
            message: `${key} is not allowed on bridge networks: their VMs join the physical LAN's addressing`,
          };
        return { path: p, message: `unknown field "${key}"; remove it or check its spelling` };
      });
    }
    case 'invalid_type': {
      if (value === undefined) return [{ path, message: 'is required' }];
      const want = typeNames[issue.expected] ?? issue.expected;
      return [{ path, message: `must be ${want}, not ${describe(value)}` }];
    }
    case 'invalid_value':
      return [
        {
          path,
          message: `must be ${issue.values.map((v) => JSON.stringify(v)).join(' or ')}, not ${describe(value)}`,
        },
      ];
    case 'invalid_union':
      if ('discriminator' in issue && issue.discriminator) {
        const options = (issue as { options?: unknown[] }).options ?? [];
        return [
          {
            path,
            message:
              value === undefined
                ? `is required (one of ${options.map((o) => JSON.stringify(o)).join(', ')})`
                : `must be one of ${options.map((o) => JSON.stringify(o)).join(', ')}, not ${describe(value)}`,
          },
        ];
      }
      return [{ path, message: issue.message }];
    case 'too_small':
      if (issue.origin === 'number' || issue.origin === 'int')
        return [{ path, message: `must be at least ${String(issue.minimum)}, not ${describe(value)}` }];
      if (issue.origin === 'array' && issue.message.startsWith('Too small'))
        return [
          {
            path,
            message: `needs at least ${String(issue.minimum)} entr${issue.minimum === 1 ? 'y' : 'ies'}`,
          },
        ];
      return [{ path, message: issue.message }];
    case 'too_big':
      if (issue.origin === 'number' || issue.origin === 'int')
        return [{ path, message: `must be at most ${String(issue.maximum)}, not ${describe(value)}` }];
      if (issue.origin === 'array')
        return [{ path, message: `allows at most ${String(issue.maximum)} entries` }];
      return [{ path, message: issue.message }];
    default:
      if (issue.code === 'invalid_format' || issue.code === 'custom')
        return [{ path, message: `${issue.message}, not ${describe(value)}` }];
      return [{ path, message: issue.message }];
  }
}

/**
 * Parses, schema-checks, places (see placement.ts: `placement` for the VMs it names, the spec's hosts, then a spread)
 * and semantically validates a spec; throws `InvalidSpecError` with every issue found.
 */
export function loadSpec(text: string, source?: string, placement?: Placement): Spec {
  return placeAndValidate(parseSpecText(text, source), source, placement);
}

/**
 * A spec text parsed and schema-checked, not yet placed nor validated (see `placeAndValidate`); throws
 * `InvalidSpecError` for YAML or schema problems.
 */
export function parseSpecText(text: string, source?: string): UnplacedSpec {
  const lines = new LineCounter();
  const doc = parseDocument(text, {
    lineCounter: lines,
    prettyErrors: false,
    uniqueKeys: true,
    logLevel: 'error',
  });
  if (doc.errors.length > 0) {
    throw new InvalidSpecError(
      doc.errors.map((e) => {
        const pos = e.linePos?.[0] ?? lines.linePos(e.pos[0]);
        const where = pos ? ` at line ${pos.line}, column ${pos.col}` : '';
        return { path: '', message: `YAML syntax error${where}: ${e.message.split('\n')[0]}` };
      }),
      source,
    );
  }
  let input: unknown;
  try {
    input = doc.toJS({ maxAliasCount: 100 });
  } catch (err) {
    throw new InvalidSpecError(
      [{ path: '', message: `YAML could not be read: ${(err as Error).message}` }],
      source,
    );
  }
  if (input === null || input === undefined || typeof input !== 'object' || Array.isArray(input)) {
    throw new InvalidSpecError(
      [
        {
          path: '',
          message: `the spec must be a YAML mapping with "version: 1" and "hosts", not ${describe(input)}`,
        },
      ],
      source,
    );
  }
  const parsed = SpecSchema.safeParse(input);
  if (!parsed.success) {
    throw new InvalidSpecError(
      parsed.error.issues.flatMap((i) => zodIssueToSpecIssues(i, input)),
      source,
    );
  }
  return parsed.data;
}

/**
 * The second half of `loadSpec`: places a parsed spec and validates it, throwing `InvalidSpecError` with every issue.
 * `memo`: what the placement-free checks found for another placement of the same text (see `validateSpecWith`),
 * filled in where empty; placing a text again then costs only the checks that read placement.
 */
export function placeAndValidate(
  parsed: UnplacedSpec,
  source?: string,
  placement?: Placement,
  memo?: ValidationMemo,
): Spec {
  const spec = placeSpec(parsed, placement);
  const { issues } = validateSpecWith(spec, memo);
  if (issues.length > 0) throw new InvalidSpecError(issues, source);
  return spec;
}

/** Reads and loads a spec file; the path names the source in error messages. */
export function loadSpecFile(path: string): Spec {
  return loadSpec(readFileSync(path, 'utf8'), path);
}
