import { describe, expect, it } from 'vitest';
import { RecordingRunner } from './runner.js';
import { Sysctl, sysctlSetArgv } from './sysctl.js';

describe('sysctl', () => {
  it('builds set commands and runs them in its namespace', async () => {
    expect(sysctlSetArgv('net.ipv4.conf.vlb-0a1b.arp_ignore', 1)).toEqual([
      'sysctl',
      '-q',
      '-w',
      'net.ipv4.conf.vlb-0a1b.arp_ignore=1',
    ]);
    const runner = new RecordingRunner().on(['sysctl', '-n'], { stdout: '1\n' });
    const s = new Sysctl(runner, 'vl-a--rt');
    await s.set('net.ipv4.ip_forward', 1);
    expect(await s.get('net.ipv4.ip_forward')).toBe('1');
    expect(runner.calls).toEqual([
      { argv: ['sysctl', '-q', '-w', 'net.ipv4.ip_forward=1'], netns: 'vl-a--rt' },
      { argv: ['sysctl', '-n', 'net.ipv4.ip_forward'], netns: 'vl-a--rt' },
    ]);
  });

  it('refuses keys and values that could be read as options, paths or several assignments', () => {
    for (const key of ['-p', 'net', 'net..ipv4', 'net/ipv4/ip_forward', 'net.ipv4.ip_forward=1', '../x.y'])
      expect(() => sysctlSetArgv(key, 1)).toThrow(/invalid sysctl key/);
    for (const value of ['', '1 2', '1\nnet.x=2', 'a=b'])
      expect(() => sysctlSetArgv('net.ipv4.ip_forward', value)).toThrow(/invalid sysctl value/);
  });
});
