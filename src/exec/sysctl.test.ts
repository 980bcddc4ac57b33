import { describe, expect, it } from 'vitest';
import { modprobe, modprobeArgv } from './modprobe.js';
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

describe('sysctl getMany', () => {
  it('reads several keys in one command; keys the namespace lacks and stray lines are left out', async () => {
    const runner = new RecordingRunner().on(['sysctl', '-e'], {
      stdout:
        'net.ipv4.tcp_ecn = 2\nnet.ipv4.tcp_available_congestion_control = reno bbr cubic\nnet.other = 1\ngarbage\n',
    });
    const got = await new Sysctl(runner, 'vl-a-host1').getMany([
      'net.ipv4.tcp_ecn',
      'net.ipv4.tcp_available_congestion_control',
      'net.ipv4.tcp_nosuch',
    ]);
    expect([...got]).toEqual([
      ['net.ipv4.tcp_ecn', '2'],
      ['net.ipv4.tcp_available_congestion_control', 'reno bbr cubic'],
    ]);
    expect(runner.lines()).toEqual([
      '[vl-a-host1] sysctl -e net.ipv4.tcp_ecn net.ipv4.tcp_available_congestion_control net.ipv4.tcp_nosuch',
    ]);
    await expect(new Sysctl(runner).getMany(['-a'])).rejects.toThrow(/invalid sysctl key/);
  });
});

describe('modprobe', () => {
  it('builds load and dry-run commands, refusing names that could be options or paths', async () => {
    expect(modprobeArgv('tcp_bbr')).toEqual(['modprobe', '-q', 'tcp_bbr']);
    expect(modprobeArgv('tcp_bbr', { dryRun: true })).toEqual(['modprobe', '-q', '-n', 'tcp_bbr']);
    for (const bad of ['-a', '../x', 'tcp bbr', '', 'TCP_BBR', `tcp_${'x'.repeat(60)}`])
      expect(() => modprobeArgv(bad)).toThrow(/invalid kernel module name/);
    const runner = new RecordingRunner().on(['modprobe', '-q', 'tcp_nosuch'], { code: 1 });
    expect(await modprobe(runner, 'tcp_nosuch')).toBe(false);
    expect(await modprobe(runner, 'tcp_bbr', { netns: 'vl-a-host1' })).toBe(true);
    expect(runner.lines()).toEqual(['modprobe -q tcp_nosuch', '[vl-a-host1] modprobe -q tcp_bbr']);
  });
});
