// Starts Easel's wasm client. A file of its own, not inline in index.html, so the page's
// Content-Security-Policy can allow only the page's own scripts.
import init, * as easel from './easel_client.js';

await init();
// Test hook: end-to-end tests read `window.easel.debug_state()` instead of guessing pixels.
window.easel = easel;
easel.start();
