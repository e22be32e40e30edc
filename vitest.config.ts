import { defineConfig } from 'vitest/config';

// Integration and end-to-end tests boot qemu guests and run mmdebstrap; they share the
// package-stage cache, so files run one at a time. A test gets a minute unless it says
// it needs more (every build and every boot says so): a hung unit test costs a minute,
// not a CI run. Hooks get longer: they build images and boot machines.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/helpers/scratch.ts'],
    fileParallelism: false,
    testTimeout: 60_000,
    hookTimeout: 15 * 60_000,
    // expect.poll waits for an outcome; its default second is a machine's speed, not a behaviour.
    expect: { poll: { timeout: 30_000 } },
    reporters: ['default'],
  },
});
