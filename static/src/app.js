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

// The server responds to a failed action with a message fragment and
// HX-Retarget (the flash area, or the form's own row for a validation
// error), so error responses are swapped like successful ones. 204 keeps
// the page as it is.
htmx.config.responseHandling = [
  { code: "204", swap: false },
  { code: "[2345]..", swap: true, error: false },
];

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

// A live update must not wipe what an operator is typing, nor an inline
// error they have not read: the swap of a fragment that holds a focused,
// edited or invalid form field is held back and applied once the operator
// is done with it (the latest held fragment wins).
function isEditing(root) {
  const active = document.activeElement;
  if (active && root.contains(active) && active.matches("input, select, textarea")) {
    return true;
  }
  if (root.querySelector("[aria-invalid='true']")) {
    return true;
  }
  for (const field of root.querySelectorAll("input:not([type=hidden]), textarea")) {
    const changed = field.type === "checkbox" || field.type === "radio"
      ? field.checked !== field.defaultChecked
      : field.value !== field.defaultValue;
    if (changed) {
      return true;
    }
  }
  for (const option of root.querySelectorAll("select option")) {
    if (option.selected !== option.defaultSelected && option.parentElement.options.length > 1) {
      return true;
    }
  }
  return false;
}

/** Fragments held back, keyed by the id of the element they replace. */
const heldSwaps = new Map();

document.addEventListener("htmx:sseBeforeMessage", (event) => {
  const target = event.target;
  if (!(target instanceof Element) || !target.id || !isEditing(target)) {
    return;
  }
  const html = event.detail.data;
  event.preventDefault();
  heldSwaps.set(target.id, html);

  // When the edits sit in rows or forms with ids that the update also
  // has, swap the rest now and keep those (hx-preserve keeps an element
  // with the same id across a swap). Otherwise the whole swap waits.
  const editing = [...target.querySelectorAll("tr[id], form[id]")].filter(isEditing);
  if (editing.length === 0) {
    return;
  }
  const incoming = document.createElement("template");
  incoming.innerHTML = html;
  for (const el of editing) {
    const replacement = incoming.content.getElementById(el.id);
    if (!replacement) {
      return;
    }
    replacement.setAttribute("hx-preserve", "true");
  }
  htmx.swap(target, incoming.innerHTML, { swapStyle: target.getAttribute("hx-swap") || "innerHTML" });
});

function applyHeldSwaps() {
  for (const [id, html] of heldSwaps) {
    const target = document.getElementById(id);
    if (!target) {
      heldSwaps.delete(id);
      continue;
    }
    if (isEditing(target)) {
      continue;
    }
    heldSwaps.delete(id);
    htmx.swap(target, html, { swapStyle: target.getAttribute("hx-swap") || "innerHTML" });
  }
}

// Focus moves before the new element has it, so check once it settled.
document.addEventListener("focusout", () => setTimeout(applyHeldSwaps, 0));
document.addEventListener("change", () => setTimeout(applyHeldSwaps, 0));
document.addEventListener("htmx:afterSettle", () => setTimeout(applyHeldSwaps, 0));

// A page kept in the back/forward cache would hold its event stream open
// and use up the six connections a browser allows per host: close the
// stream when the page is hidden that way, and reload it when it returns.
window.addEventListener("pagehide", (event) => {
  if (!event.persisted) {
    return;
  }
  // The SSE extension closes an element's EventSource when htmx cleans the
  // element up; htmx.trigger passes the event to the extension.
  for (const el of document.querySelectorAll("[sse-connect]")) {
    htmx.trigger(el, "htmx:beforeCleanupElement");
  }
});
window.addEventListener("pageshow", (event) => {
  if (event.persisted) {
    window.location.reload();
  }
});

// Heartbeat ages ("4s ago") count up in the browser, so a row is pushed
// only when the worker's state changes, not every second.
function formatAge(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s ago`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m ago`;
  return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h ago`;
}

function updateAges() {
  const now = Date.now();
  for (const el of document.querySelectorAll("time[data-age]")) {
    const t = Date.parse(el.getAttribute("datetime"));
    if (!Number.isNaN(t)) {
      el.textContent = formatAge((now - t) / 1000);
    }
  }
}
setInterval(updateAges, 1000);

startCharts();
