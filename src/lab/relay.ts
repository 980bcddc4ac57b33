// The lab's management relay: a byte pipe from a unix socket (where the controller connects) to an agent's TCP
// listener across the lab LAN. It runs in the lab's management namespace, so what the controller sees of a
// host is what a management station on that LAN would see.
import { chmodSync, rmSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { InvalidRequestError } from '../shared/errors.js';

/** One relayed path: a unix socket to listen on and the TCP address it leads to. */
export interface RelayRoute {
  /** `unix:///path.sock` */
  listen: string;
  /** `https://addr:port` (the scheme only names the protocol spoken over the pipe; TLS passes through untouched). */
  to: string;
}

/** A running relay. */
export interface Relay {
  /** Stops listening, removes the sockets and cuts open connections. */
  close(): Promise<void>;
}

/** Parses `--listen`/`--to` pairs given in order; fails naming the first bad one. */
export function pairRoutes(listen: string[], to: string[]): RelayRoute[] {
  if (listen.length === 0 || listen.length !== to.length)
    throw new InvalidRequestError(
      `the relay needs one --to per --listen (got ${listen.length} --listen and ${to.length} --to)`,
    );
  return listen.map((l, i) => {
    unixPath(l);
    tcpTarget(to[i]!);
    return { listen: l, to: to[i]! };
  });
}

function unixPath(address: string): string {
  if (!address.startsWith('unix:///'))
    throw new InvalidRequestError(`relay listen address must be unix:///path, got ${address}`);
  return address.slice('unix://'.length);
}

function tcpTarget(address: string): { host: string; port: number } {
  let u: URL;
  try {
    u = new URL(address);
  } catch {
    throw new InvalidRequestError(`relay target must be https://addr:port, got ${address}`);
  }
  const port = Number(u.port);
  if (!['http:', 'https:'].includes(u.protocol) || !u.hostname || !Number.isInteger(port) || port < 1)
    throw new InvalidRequestError(`relay target must be https://addr:port, got ${address}`);
  return { host: u.hostname, port };
}

/** Joins two sockets both ways; each side's end is passed on (half-close), an error on either cuts both. */
export function pipeSockets(a: Socket, b: Socket): void {
  const cut = () => {
    a.destroy();
    b.destroy();
  };
  a.on('error', cut);
  b.on('error', cut);
  a.on('close', () => b.destroy());
  b.on('close', () => a.destroy());
  a.pipe(b);
  b.pipe(a);
}

/** Starts listening on every route's unix socket (mode 0600) and relays each connection to its target. */
export async function startRelay(routes: RelayRoute[]): Promise<Relay> {
  const servers: Server[] = [];
  const open = new Set<Socket>();
  try {
    for (const r of routes) {
      const path = unixPath(r.listen);
      const target = tcpTarget(r.to);
      const server = createServer({ allowHalfOpen: true }, (client) => {
        const upstream = connect({ ...target, allowHalfOpen: true });
        for (const s of [client, upstream]) {
          open.add(s);
          s.once('close', () => open.delete(s));
        }
        pipeSockets(client, upstream);
      });
      rmSync(path, { force: true });
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(path, () => {
          server.off('error', reject);
          resolve();
        });
      });
      chmodSync(path, 0o600);
      servers.push(server);
    }
  } catch (e) {
    await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
    throw e;
  }
  return {
    close: async () => {
      for (const s of open) s.destroy();
      await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
      for (const r of routes) rmSync(unixPath(r.listen), { force: true });
    },
  };
}

/** Runs a relay until SIGTERM/SIGINT (`vmlink lab relay`). */
export async function runRelay(routes: RelayRoute[]): Promise<void> {
  const relay = await startRelay(routes);
  process.stdout.write(`relay: ${routes.map((r) => `${r.listen} -> ${r.to}`).join(', ')}\n`);
  const stop = () => {
    void relay.close().then(() => process.exit(0));
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}
