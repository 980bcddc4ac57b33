// Response schemas shared by the controller's route modules (api.ts, auth/routes.ts).
import { ErrorBodySchema } from '../shared/errors.js';
import { TaskAcceptedSchema } from './wire.js';

/** Response schemas of a route: its answer under `status`, and vmlink's error body for every failure. */
export const answers = <S>(ok: S, status: 200 | 202 = 200) => ({
  [status]: ok,
  '4xx': ErrorBodySchema,
  '5xx': ErrorBodySchema,
});
/** A task's answer: 202 with its id (the result comes from `GET /v1/tasks/:id`). */
export const accepted = answers(TaskAcceptedSchema, 202);
