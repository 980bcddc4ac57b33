// Live migration (issue 13, docs/mobility.md): the explain and the run, as the API and the balancer call them.
export {
  explainMigration,
  MIGRATION_DOWNTIME_LIMIT_MS,
  type MigrationCheck,
  type MigrationExplain,
  type MigrationFacts,
} from './explain.js';
export { gatherFacts } from './facts.js';
export {
  explainFor,
  type MigrationDeps,
  type MigrationReport,
  type MigrationStep,
  peerAgentAddress,
  runMigration,
} from './run.js';
