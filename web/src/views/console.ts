// A VM's serial console in xterm.js over the controller's websocket (GET /v1/vms/:name/console/stream): binary
// frames carry the console's bytes both ways, text frames are JSON control (hello/mode: may this page type;
// notices). A read-only session gets output only (the terminal takes no keys; the controller drops them anyway).
import { FitAddon } from '@xterm/addon-fit';
import { Terminal } from '@xterm/xterm';
import { consoleStreamPath, wsUrl } from '../api.js';
import { h, replace } from '../dom.js';
import { Backoff } from '../lib/backoff.js';
import { readControl } from '../lib/control.js';
import { header, type View } from './view.js';

/** Largest frame taken from the controller (it sends the console in small chunks). */
const FRAME_MAX = 1024 * 1024;
/** Bytes of the console's log shown on attach. */
const TAIL = 8192;
/** Largest keystroke frame the controller takes. */
const KEYS_FRAME_MAX = 4096;
/** Longest close reason shown. */
const NOTICE_MAX = 500;

export const consoleView: View = {
  id: 'console',
  title: 'Console',
  mount(root, ctx, arg) {
    const name = arg ? decodeURIComponent(arg) : '';
    const state = h('span', { class: 'meta', role: 'status', 'data-testid': 'console-state' }, 'connecting…');
    const mode = h(
      'span',
      { class: 'meta', 'data-testid': 'console-mode' },
      ctx.canOperate ? '' : 'read-only: output only',
    );
    let writable = false;
    const notices = h('ul', { class: 'notices', 'aria-live': 'polite' });
    const holder = h('div', { class: 'terminal', 'data-testid': 'terminal' });
    replace(
      root,
      header(`Console of ${name}`, h('a', { class: 'btn', href: '#/vms' }, 'Back to VMs'), mode, state),
      notices,
      holder,
    );
    const term = new Terminal({
      cursorBlink: true,
      scrollback: 5000,
      disableStdin: !ctx.canOperate,
      fontSize: 14,
      fontFamily: 'monospace',
    });
    const fit = new FitAddon();
    term.loadAddon(fit);
    term.open(holder);
    fit.fit();
    term.focus();
    const onResize = () => fit.fit();
    window.addEventListener('resize', onResize);

    const enc = new TextEncoder();
    const backoff = new Backoff(1000, 15_000);
    let ws: WebSocket | undefined;
    let closed = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const notice = (text: string) => {
      notices.append(h('li', {}, text));
      while (notices.children.length > 5) notices.firstElementChild?.remove();
    };
    const connect = () => {
      // The last few KiB of the log first: the prompt or boot messages that came before this page.
      const sock = new WebSocket(wsUrl(`${consoleStreamPath(name)}?tail=${TAIL}`));
      sock.binaryType = 'arraybuffer';
      ws = sock;
      sock.onopen = () => {
        backoff.succeeded();
        replace(state, 'connected');
        holder.dataset.connected = 'true';
      };
      sock.onmessage = (m) => {
        if (m.data instanceof ArrayBuffer) {
          if (m.data.byteLength <= FRAME_MAX) term.write(new Uint8Array(m.data));
        } else if (typeof m.data === 'string') {
          const c = readControl(m.data);
          if (c.type === 'mode') {
            writable = ctx.canOperate && c.mode === 'write';
            holder.dataset.mode = c.mode;
            replace(mode, c.text);
          } else if (c.type === 'notice') notice(c.text);
        }
      };
      sock.onclose = (ev) => {
        holder.dataset.connected = 'false';
        writable = false;
        if (closed) return;
        backoff.failed();
        const why = ev.reason ? `: ${ev.reason.slice(0, NOTICE_MAX)}` : '';
        const wait = backoff.next();
        replace(state, `disconnected${why}; reconnecting in ${Math.round(wait / 1000)} s`);
        timer = setTimeout(connect, wait);
      };
    };
    const keys = term.onData((d) => {
      // At most 4096 bytes a frame (the controller's bound): a big paste goes in several.
      if (!writable || ws?.readyState !== WebSocket.OPEN) return;
      const bytes = enc.encode(d);
      for (let i = 0; i < bytes.length; i += KEYS_FRAME_MAX) ws.send(bytes.subarray(i, i + KEYS_FRAME_MAX));
    });
    connect();
    return () => {
      closed = true;
      clearTimeout(timer);
      keys.dispose();
      ws?.close();
      window.removeEventListener('resize', onResize);
      term.dispose();
    };
  },
};
