// Helpers every validation module shares: how issues are recorded, duplicates, address problems.
import { type Cidr, cidrContains, formatCidr, formatIpv4 } from '../net.js';

/** Records one issue at a spec path. */
export type Add = (path: string, message: string) => void;

/** Reports every item whose key an earlier item already has, naming both paths. */
export function dupes<T>(
  items: T[],
  key: (t: T) => string,
  path: (i: number) => string,
  what: string,
  add: Add,
) {
  const seen = new Map<string, number>();
  items.forEach((item, i) => {
    const k = key(item);
    const first = seen.get(k);
    if (first === undefined) seen.set(k, i);
    else add(path(i), `duplicate ${what} "${k}" (already used at ${path(first)}); names must be unique`);
  });
}

/** The message for a CIDR written with host bits set. */
export function hostBitsMessage(text: string, c: Cidr): string {
  return `${text} has host bits set; write the network address, ${formatCidr(c)}`;
}

/** Why `ip` cannot be a host address in `c`, or undefined when it can. */
export function addressProblem(ip: number, c: Cidr, cidrText: string): string | undefined {
  const s = formatIpv4(ip);
  if (!cidrContains(c, ip)) return `${s} is outside ${cidrText}`;
  if (ip === c.network) return `${s} is the network address of ${cidrText}; pick a host address`;
  if (ip === c.broadcast) return `${s} is the broadcast address of ${cidrText}; pick a host address`;
  return undefined;
}
