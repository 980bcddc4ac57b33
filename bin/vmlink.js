#!/usr/bin/env node
// Entry point: loads the TypeScript composition root through tsx so a checkout runs without a build step.
import { register } from 'tsx/esm/api';

register();
await import('../src/main.ts');
