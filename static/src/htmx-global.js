// Publishes htmx as window.htmx for code that expects the global, such as
// the plain-script build of an extension (htmx-ext-sse/sse.js) or the
// browser console. app.js imports this module before htmx-ext-sse, and
// ES modules run in import order, so the global is set before any
// extension code runs.
import htmx from "htmx.org";

window.htmx = htmx;

export default htmx;
