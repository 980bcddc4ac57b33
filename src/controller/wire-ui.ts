// The web console's API contract (controller/ui/): login links, the caller's session, the localhost listener.
import { z } from 'zod';
import { RoleSchema } from './wire-access.js';

/** Answer of `POST /v1/ui/links`. */
export const LoginLinkSchema = z.object({
  token: z.string(),
  /** Path of the login page on the console's listener: `/ui/login?t=TOKEN`. */
  path: z.string(),
  expiresAt: z.string(),
});

/** Answer of `GET /v1/ui/session`. */
export const UiSessionSchema = z.object({
  who: z.string(),
  role: RoleSchema,
  /** When the browser session ends (absent for a bearer token or the root socket). */
  expiresAt: z.string().optional(),
});

/** Body of `POST /v1/ui/listener`. */
export const UiListenerBodySchema = z
  .object({ port: z.number().int().min(0).max(65_535).optional() })
  .strict();

/** Answer of `POST /v1/ui/listener`. */
export const UiListenerSchema = z.object({
  /** The console's origin (`https://127.0.0.1:PORT`); the console itself is at `${url}/ui/`. */
  url: z.string(),
  /** Whether this call started the listener. */
  started: z.boolean(),
  /** The CA file a browser (or curl) must trust for the listener's certificate, and its fingerprint. */
  ca: z.string(),
  caFingerprint: z.string(),
});
export type UiListenerAnswer = z.infer<typeof UiListenerSchema>;
