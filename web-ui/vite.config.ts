// Vite builds the UI into dist/, which the host embeds (crate host/ui).
// `npm run dev` serves it with the API proxied to a host on 127.0.0.1:8080.
import { defineConfig } from "vitest/config";
import react from "@vitejs/plugin-react";

export default defineConfig({
  plugins: [react()],
  build: { outDir: "dist", emptyOutDir: true, sourcemap: false, chunkSizeWarningLimit: 600 },
  server: {
    host: "127.0.0.1",
    proxy: { "/api": "http://127.0.0.1:8080" },
  },
  test: { include: ["src/**/*.test.ts"] },
});
