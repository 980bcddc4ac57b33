import { expect, it } from 'vitest';
import { RecordingRunner } from '../exec/runner.js';
import { runnerSide } from './throughput.js';

it('a runner side runs in its namespace and stops only the iperf3 that wrote the pidfile', async () => {
  const runner = new RecordingRunner();
  const side = runnerSide('pc1', '192.168.50.20', runner, 'vl-lab-pc1');
  const stop = await side.startServer(5201);
  await side.run(['iperf3', '-c', 'x'], 1000);
  await stop();
  const lines = runner.lines();
  expect(lines[0]).toMatch(
    /^\[vl-lab-pc1\] iperf3 -s -1 -p 5201 -I \/tmp\/vmlink-iperf3-5201-[0-9a-f]{8}\.pid$/,
  );
  expect(lines[1]).toBe('[vl-lab-pc1] iperf3 -c x');
  expect(lines[2]).toMatch(/^pkill -F \/tmp\/vmlink-iperf3-5201-[0-9a-f]{8}\.pid -x iperf3$/);
  expect(runner.calls[0]!.detached).toBe(true);
});
