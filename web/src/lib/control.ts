// The serial console stream's control frames (text frames, JSON; console's contract in docs/web-console.md).
// Pure: unit-tested in control.test.ts.

/** Longest notice shown. */
const NOTICE_MAX = 500;

/** A control frame from the controller, as the console view acts on it. */
export type Control =
  | { type: 'mode'; mode: 'read' | 'write'; text: string }
  | { type: 'notice'; text: string }
  | { type: 'ignored' };

/** Reads a text (control) frame: hello and mode set whether keys go to the guest; notices are shown (bounded). */
export function readControl(data: string): Control {
  if (data.length > 16 * 1024) return { type: 'ignored' };
  let m: { type?: unknown; message?: unknown; mode?: unknown; host?: unknown };
  try {
    m = JSON.parse(data) as typeof m;
  } catch {
    return { type: 'notice', text: data.slice(0, NOTICE_MAX) };
  }
  if (m === null || typeof m !== 'object') return { type: 'ignored' };
  if ((m.type === 'hello' || m.type === 'mode') && (m.mode === 'read' || m.mode === 'write')) {
    const where = m.type === 'hello' && typeof m.host === 'string' ? ` on host ${m.host.slice(0, 64)}` : '';
    return {
      type: 'mode',
      mode: m.mode,
      text: `${m.mode === 'write' ? 'attached: keys go to the guest' : 'attached read-only: output only'}${where}`,
    };
  }
  if (typeof m.message === 'string') return { type: 'notice', text: m.message.slice(0, NOTICE_MAX) };
  return { type: 'ignored' };
}
