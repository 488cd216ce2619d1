import { defineConfig } from 'vite';
import react from '@vitejs/plugin-react';

// The app speaks only to same-origin /api. In production the proxy on :8080
// serves dist/ and passes /api to the gateways; `npm run dev` and
// `npm run preview` pass /api (HTTP and WebSocket) to one gateway, by default
// gateway 1 of the local stack (ROOMS_API overrides it).
const api = process.env.ROOMS_API ?? 'http://127.0.0.1:8081';
const proxy = {
  '/api': { target: api, ws: true, changeOrigin: false },
};

export default defineConfig({
  plugins: [react()],
  build: { outDir: 'dist', sourcemap: true },
  server: { port: 5173, strictPort: true, proxy },
  preview: { port: 4173, strictPort: true, proxy },
});
