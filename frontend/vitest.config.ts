import { defineConfig } from 'vitest/config';

// Unit tests of the protocol logic (src/lib): plain TypeScript, no browser.
export default defineConfig({
  test: {
    include: ['tests/unit/**/*.test.ts'],
    environment: 'node',
  },
});
