import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { InvalidSpecError, type SpecIssue } from '../shared/errors.js';
import { checkCapacity } from './admission.js';
import { formatPath, loadSpec, loadSpecFile } from './load.js';

const yaml = `
version: 1
hosts:
  - name: host1
    uplink: eth0
networks:
  - name: natnet
    host: host1
    mode: nat
    cidr: 10.10.0.0/24
    forwards:
      - { hostPort: 8080, vm: web1, vmPort: 80 }
vms:
  - name: web1
    host: host1
    memoryMiB: 512
    nics:
      - { network: natnet, ip: 10.10.0.10 }
`;

function issues(text: string): SpecIssue[] {
  try {
    loadSpec(text);
  } catch (e) {
    expect(e).toBeInstanceOf(InvalidSpecError);
    return (e as InvalidSpecError).issues;
  }
  return [];
}

describe('loadSpec', () => {
  it('loads a valid spec and applies defaults', () => {
    const spec = loadSpec(yaml);
    expect(spec.vms[0]).toMatchObject({
      cpus: 1,
      memoryMiB: 512,
      state: 'running',
      image: { kind: 'test-guest' },
    });
    const net = spec.networks[0]!;
    expect(net.mode === 'nat' && net.forwards[0]!.protocol).toBe('tcp');
  });

  it('reports YAML syntax errors with line and column', () => {
    const err = (() => {
      try {
        loadSpec('version: 1\nhosts:\n  - name: [a\n', 'site.yaml');
      } catch (e) {
        return e as InvalidSpecError;
      }
    })();
    expect(err).toBeInstanceOf(InvalidSpecError);
    expect(err!.issues[0]!.message).toMatch(/YAML syntax error at line \d+, column \d+/);
    expect(err!.message).toContain('site.yaml: ');
  });

  it('reports duplicate YAML keys', () => {
    expect(issues('version: 1\nversion: 1\nhosts: [{name: a}]\n')[0]!.message).toMatch(/YAML syntax error/);
  });

  it('refuses a non-mapping document', () => {
    expect(issues('')[0]!.message).toContain('must be a YAML mapping');
    expect(issues('- a\n- b\n')[0]!.message).toContain('not a list');
  });

  it('names unknown keys with their full path', () => {
    const is = issues(yaml.replace('    memoryMiB: 512', '    ram: 512\n    colour: red'));
    expect(is).toContainEqual({
      path: 'vms[0].ram',
      message: expect.stringContaining('unknown field "ram"'),
    });
    expect(is).toContainEqual({
      path: 'vms[0].colour',
      message: expect.stringContaining('unknown field "colour"'),
    });
  });

  it('gives a clear message for forwards on a bridge network', () => {
    const is = issues(`
version: 1
hosts: [{ name: host1 }]
networks:
  - { name: lan, host: host1, mode: bridge, forwards: [{ hostPort: 80, vm: a, vmPort: 80 }] }
`);
    expect(is).toEqual([
      {
        path: 'networks[0].forwards',
        message: expect.stringContaining('forwards are only allowed on nat networks'),
      },
    ]);
  });

  it('explains cidr on a bridge network', () => {
    const is = issues(
      'version: 1\nhosts: [{name: h}]\nnetworks: [{name: b, host: h, mode: bridge, cidr: 10.0.0.0/24}]\n',
    );
    expect(is[0]).toMatchObject({
      path: 'networks[0].cidr',
      message: expect.stringContaining('not allowed on bridge'),
    });
  });

  it('maps type, range, enum and required issues to readable messages with paths', () => {
    const is = issues(`
version: 2
hosts: [{ name: host1 }]
networks:
  - { name: n, host: host1, mode: wifi }
vms:
  - { name: v, host: host1, cpus: 0, memoryMiB: "lots", nics: [{ network: n, ip: 10.0.0.300 }], state: paused }
  - { host: host1, nics: [] }
`);
    const byPath = Object.fromEntries(is.map((i) => [i.path, i.message]));
    expect(byPath.version).toMatch(/must be 1/);
    expect(byPath['networks[0].mode']).toMatch(
      /one of "nat", "bridge", "isolated", "vxlan", "vlan", not the string "wifi"/,
    );
    expect(byPath['vms[0].cpus']).toMatch(/at least 1, not number 0/);
    expect(byPath['vms[0].memoryMiB']).toMatch(/must be a number, not the string "lots"/);
    expect(byPath['vms[0].nics[0].ip']).toMatch(/IPv4/);
    expect(byPath['vms[0].state']).toMatch(/"running" or "stopped"/);
    expect(byPath['vms[1].name']).toBe('is required');
    expect(byPath['vms[1].nics']).toMatch(/at least one NIC/);
  });

  it('refuses names with shell metacharacters, naming the field', () => {
    for (const bad of ['a;b', 'a$(x)', 'a`x`', 'a b', 'a/b', 'Web', `a${'b'.repeat(31)}`]) {
      const is = issues(yaml.replace('name: web1', `name: ${JSON.stringify(bad)}`));
      expect(is.map((i) => i.path)).toContain('vms[0].name');
    }
  });

  it('runs semantic validation after the schema', () => {
    const is = issues(yaml.replace('ip: 10.10.0.10', 'ip: 10.99.0.10'));
    expect(is).toEqual([
      { path: 'vms[0].nics[0].ip', message: expect.stringContaining('outside 10.10.0.0/24') },
    ]);
  });

  it('loads JSON too', () => {
    expect(loadSpec(JSON.stringify({ version: 1, hosts: [{ name: 'h' }] })).hosts[0]!.uplink).toBe('eth0');
  });

  it('refuses alias bombs', () => {
    const bomb = `a: &a [x,x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\n`;
    expect(() => loadSpec(bomb)).toThrow(InvalidSpecError);
  });

  it('loadSpecFile names the file in the error', () => {
    const dir = mkdtempSync(join(tmpdir(), 'vmlink-spec-'));
    const file = join(dir, 'site.yaml');
    writeFileSync(file, 'version: 1\n');
    expect(() => loadSpecFile(file)).toThrow(`${file}: spec is invalid`);
    writeFileSync(file, yaml);
    expect(loadSpecFile(file).hosts[0]!.name).toBe('host1');
    rmSync(dir, { recursive: true, force: true });
  });
});

describe('formatPath', () => {
  it('formats indexes and odd keys', () => {
    expect(formatPath(['vms', 1, 'nics', 0, 'ip'])).toBe('vms[1].nics[0].ip');
    expect(formatPath(['a b'])).toBe('["a b"]');
    expect(formatPath([])).toBe('');
  });
});

describe('checkCapacity', () => {
  const spec = loadSpec(`
version: 1
hosts: [{ name: h1 }, { name: h2, capacity: { cpus: 2, memoryMiB: 1024 } }]
networks: [{ name: n1, host: h1, mode: isolated, cidr: 10.0.0.0/24 }, { name: n2, host: h2, mode: isolated, cidr: 10.1.0.0/24 }]
vms:
  - { name: a, host: h1, cpus: 4, memoryMiB: 1024, nics: [{ network: n1 }] }
  - { name: b, host: h1, memoryMiB: 1024, nics: [{ network: n1 }] }
  - { name: c, host: h1, memoryMiB: 4096, state: stopped, nics: [{ network: n1 }] }
  - { name: d, host: h2, cpus: 2, memoryMiB: 512, nics: [{ network: n2 }] }
  - { name: e, host: h2, memoryMiB: 512, nics: [{ network: n2 }] }
`);

  it('passes when everything fits', () => {
    expect(checkCapacity(spec, { h1: { cpus: 8, memoryMiB: 8192 }, h2: { cpus: 1, memoryMiB: 64 } })).toEqual(
      [expect.objectContaining({ path: 'vms[4].memoryMiB' })],
    );
  });

  it('flags too many cpus', () => {
    const is = checkCapacity(spec, { h1: { cpus: 2, memoryMiB: 8192 } });
    expect(is).toContainEqual({
      path: 'vms[0].cpus',
      message: expect.stringContaining('asks for 4 CPUs but host "h1" has 2'),
    });
  });

  it('flags running VMs beyond memory less the reserve; stopped VMs only when they alone do not fit', () => {
    const is = checkCapacity(spec, { h1: { cpus: 8, memoryMiB: 2048 } });
    expect(is).toContainEqual({
      path: 'vms[1].memoryMiB',
      message: expect.stringContaining('need 2048 MiB'),
    });
    expect(is).toContainEqual({
      path: 'vms[2].memoryMiB',
      message: expect.stringContaining('needs 4096 MiB'),
    });
  });

  it('uses the spec capacity over the reported one and skips unknown hosts', () => {
    expect(checkCapacity(spec, { h2: { cpus: 64, memoryMiB: 65536 } })).toEqual([
      {
        path: 'vms[4].memoryMiB',
        message: expect.stringContaining('1024 MiB less 256 MiB reserved = 768 MiB'),
      },
    ]);
  });
});
