// Entry point of the dashboard bundle that esbuild writes to static/dist/app.js.
// Load it with <script defer>: htmx processes the page on DOMContentLoaded,
// and an async script that runs after that event leaves the page unprocessed.

// This import must stay first so that window.htmx exists before the SSE
// extension runs. htmx-ext-sse 2.2.4 (dist/sse.esm.js) imports htmx.org
// itself and registers with htmx.defineExtension("sse", ...) when it is
// evaluated, so the page can use hx-ext="sse" with no further setup.
import htmx from "./htmx-global.js";
import "htmx-ext-sse";
import { startCharts } from "./charts.js";

// The page is served with a Content-Security-Policy that forbids inline
// scripts, inline styles and eval. Without these settings htmx would insert
// a <style> element for its request indicators (static/src/app.css styles
// them instead), evaluate hx-on and "js:" attribute values, and run <script>
// elements found in swapped content.
htmx.config.includeIndicatorStyles = false;
htmx.config.allowEval = false;
htmx.config.allowScriptTags = false;

// Send the CSRF token from <meta name="csrf-token"> with every request that
// can change state. The meta element is read on each request so that a
// token replaced by a swap is picked up.
document.addEventListener("htmx:configRequest", (event) => {
  const detail = event.detail;
  if (String(detail.verb).toUpperCase() === "GET") {
    return;
  }

  const meta = document.querySelector('meta[name="csrf-token"]');
  if (meta && meta.content) {
    detail.headers["X-CSRF-Token"] = meta.content;
  }
});

// Mark the state of the SSE stream on <body data-stream> so that CSS can
// show "Live" or "Reconnecting…". The SSE extension reconnects by itself.
document.addEventListener("htmx:sseOpen", () => {
  document.body.dataset.stream = "open";
});
document.addEventListener("htmx:sseError", () => {
  document.body.dataset.stream = "error";
});

startCharts();
