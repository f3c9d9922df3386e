// Line charts for <canvas data-chart-url="..."> elements.
//
// The URL must be same-origin and return
//   {"labels": [ISO 8601 timestamps], "datasets": [{"label": "...", "data": [numbers]}]}
// A null in data is drawn as a gap. The chart is refetched every
// data-chart-refresh-seconds (default 60). A button with
// data-chart-range="1h" data-chart-target="canvasId" sets range= in that
// canvas's URL and redraws it. Chart.js sizes the chart to the canvas's
// parent, so wrap each canvas in an element with a height (.chart-box).
//
// While a request is in flight the canvas has aria-busy="true", and
// data-chart-state is "ready" or "error" after it completes.
import Chart from "chart.js/auto";

const DEFAULT_REFRESH_SECONDS = 60;
// A typo such as data-chart-refresh-seconds="0" must not turn into a
// request loop, so shorter intervals are raised to this.
const MIN_REFRESH_SECONDS = 5;
const DAY_MS = 24 * 60 * 60 * 1000;

// Formats use the browser's locale and time zone, with a 24-hour clock.
const timeFormat = new Intl.DateTimeFormat(undefined, {
  hour: "2-digit",
  minute: "2-digit",
  hourCycle: "h23",
});
const dateTimeFormat = new Intl.DateTimeFormat(undefined, {
  month: "short",
  day: "numeric",
  hour: "2-digit",
  minute: "2-digit",
  hourCycle: "h23",
});
const tooltipFormat = new Intl.DateTimeFormat(undefined, {
  year: "numeric",
  month: "short",
  day: "numeric",
  hour: "2-digit",
  minute: "2-digit",
  second: "2-digit",
  hourCycle: "h23",
});

/**
 * Charts on the page, keyed by canvas element. Each value is
 * {chart: Chart|null, timer: number, controller: AbortController|null, titles: string[]}.
 * @type {Map<HTMLCanvasElement, object>}
 */
const charts = new Map();

/** Draws every chart on the page now and after each htmx swap. */
export function startCharts() {
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", syncCharts);
  } else {
    syncCharts();
  }

  document.addEventListener("htmx:afterSettle", syncCharts);
  document.addEventListener("htmx:historyRestore", syncCharts);
  document.addEventListener("click", selectRange);
  document.addEventListener("visibilitychange", refreshAllIfVisible);
}

// Destroys charts whose canvas left the DOM and starts one for each new canvas.
function syncCharts() {
  for (const canvas of charts.keys()) {
    if (!canvas.isConnected) {
      destroyChart(canvas);
    }
  }

  for (const canvas of document.querySelectorAll("canvas[data-chart-url]")) {
    if (!charts.has(canvas)) {
      startChart(canvas);
    }
  }
}

function startChart(canvas) {
  const state = { chart: null, timer: 0, controller: null, titles: [] };
  charts.set(canvas, state);

  if (!canvas.hasAttribute("role")) {
    canvas.setAttribute("role", "img");
  }

  loadChart(canvas, state);

  state.timer = window.setInterval(() => {
    if (!canvas.isConnected) {
      destroyChart(canvas);
      return;
    }
    // A hidden tab skips refreshes, and refreshAllIfVisible catches up
    // when the tab is shown again.
    if (!document.hidden) {
      loadChart(canvas, state);
    }
  }, refreshSeconds(canvas) * 1000);
}

function destroyChart(canvas) {
  const state = charts.get(canvas);
  if (!state) {
    return;
  }

  charts.delete(canvas);
  window.clearInterval(state.timer);
  if (state.controller) {
    state.controller.abort();
  }
  if (state.chart) {
    state.chart.destroy();
  }
}

function refreshSeconds(canvas) {
  const seconds = Number.parseInt(canvas.dataset.chartRefreshSeconds ?? "", 10);
  if (!Number.isFinite(seconds)) {
    return DEFAULT_REFRESH_SECONDS;
  }
  return Math.max(seconds, MIN_REFRESH_SECONDS);
}

function refreshAllIfVisible() {
  if (document.hidden) {
    return;
  }
  for (const [canvas, state] of charts) {
    loadChart(canvas, state);
  }
}

// Fetches the canvas's data and redraws it. A newer call for the same
// canvas aborts the older request, so a slow response never overwrites a
// newer range.
async function loadChart(canvas, state) {
  const url = chartURL(canvas);
  if (url === null) {
    canvas.dataset.chartState = "error";
    console.warn("chart: invalid data-chart-url, expected a same-origin URL:", canvas.dataset.chartUrl);
    return;
  }

  if (state.controller) {
    state.controller.abort();
  }
  const controller = new AbortController();
  state.controller = controller;
  canvas.setAttribute("aria-busy", "true");

  try {
    const response = await fetch(url, {
      credentials: "same-origin",
      headers: { Accept: "application/json" },
      cache: "no-store",
      signal: controller.signal,
    });
    if (!response.ok) {
      throw new Error(`GET ${url.pathname}${url.search} returned HTTP ${response.status}`);
    }
    const series = parseSeries(await response.json());

    if (state.controller === controller && charts.get(canvas) === state) {
      drawChart(canvas, state, series);
      canvas.dataset.chartState = "ready";
    }
  } catch (error) {
    if (error.name === "AbortError") {
      return;
    }
    canvas.dataset.chartState = "error";
    console.warn("chart: loading data failed:", url.href, error);
  } finally {
    if (state.controller === controller) {
      state.controller = null;
      canvas.removeAttribute("aria-busy");
    }
  }
}

// Returns the canvas's data URL, or null when it is missing, malformed or
// points to another origin.
function chartURL(canvas) {
  const raw = canvas.dataset.chartUrl;
  if (!raw) {
    return null;
  }

  let url;
  try {
    url = new URL(raw, window.location.href);
  } catch {
    return null;
  }
  if (url.origin !== window.location.origin) {
    return null;
  }
  return url;
}

// Validates the response body and converts the labels to display strings.
// Throws a TypeError that names the first invalid field.
function parseSeries(body) {
  if (body === null || typeof body !== "object") {
    throw new TypeError("chart data: expected a JSON object");
  }
  if (!Array.isArray(body.labels)) {
    throw new TypeError("chart data: labels must be an array of ISO 8601 strings");
  }
  if (!Array.isArray(body.datasets)) {
    throw new TypeError("chart data: datasets must be an array");
  }

  const times = body.labels.map((label, index) => {
    const time = typeof label === "string" ? Date.parse(label) : Number.NaN;
    if (Number.isNaN(time)) {
      throw new TypeError(`chart data: labels[${index}] is not an ISO 8601 timestamp: ${label}`);
    }
    return time;
  });

  const datasets = body.datasets.map((dataset, index) => {
    if (dataset === null || typeof dataset !== "object" || !Array.isArray(dataset.data)) {
      throw new TypeError(`chart data: datasets[${index}].data must be an array`);
    }
    const data = dataset.data.map((value, point) => {
      if (value === null) {
        return null;
      }
      if (typeof value !== "number" || !Number.isFinite(value)) {
        throw new TypeError(`chart data: datasets[${index}].data[${point}] is not a number`);
      }
      return value;
    });
    return { label: String(dataset.label ?? ""), data };
  });

  let first = Infinity;
  let last = -Infinity;
  for (const time of times) {
    first = Math.min(first, time);
    last = Math.max(last, time);
  }
  const span = times.length > 0 ? last - first : 0;
  const labelFormat = span > DAY_MS ? dateTimeFormat : timeFormat;

  return {
    labels: times.map((time) => labelFormat.format(time)),
    titles: times.map((time) => tooltipFormat.format(time)),
    datasets,
  };
}

function drawChart(canvas, state, series) {
  const datasets = series.datasets.map((dataset) => ({
    label: dataset.label,
    data: dataset.data,
    borderWidth: 2,
    pointRadius: 0,
    pointHitRadius: 6,
    spanGaps: false,
  }));
  state.titles = series.titles;

  if (!canvas.hasAttribute("aria-label") || canvas.dataset.chartGeneratedLabel === "true") {
    const names = datasets.map((dataset) => dataset.label).filter(Boolean).join(", ");
    canvas.setAttribute("aria-label", names ? `Line chart: ${names}` : "Line chart");
    canvas.dataset.chartGeneratedLabel = "true";
  }

  if (state.chart) {
    state.chart.data.labels = series.labels;
    state.chart.data.datasets = datasets;
    state.chart.options.plugins.legend.display = datasets.length > 1;
    state.chart.update();
    return;
  }

  state.chart = new Chart(canvas, {
    type: "line",
    data: { labels: series.labels, datasets },
    options: {
      responsive: true,
      maintainAspectRatio: false,
      animation: false,
      interaction: { mode: "index", intersect: false },
      scales: {
        x: { ticks: { autoSkip: true, maxRotation: 0 } },
        y: { beginAtZero: true },
      },
      plugins: {
        legend: { display: datasets.length > 1 },
        tooltip: {
          callbacks: {
            title: (items) => (items.length > 0 ? state.titles[items[0].dataIndex] ?? "" : ""),
          },
        },
      },
    },
  });
}

// Handles a click on a range button: sets range= in the URL of each target
// canvas (data-chart-target lists canvas ids separated by spaces), marks the
// pressed button with aria-pressed and redraws the charts.
function selectRange(event) {
  if (!(event.target instanceof Element)) {
    return;
  }
  const button = event.target.closest("[data-chart-range][data-chart-target]");
  if (!button) {
    return;
  }
  event.preventDefault();

  for (const id of button.dataset.chartTarget.split(/\s+/).filter(Boolean)) {
    const canvas = document.getElementById(id);
    if (!(canvas instanceof HTMLCanvasElement)) {
      console.warn("chart: data-chart-target names no canvas element:", id);
      continue;
    }
    const url = chartURL(canvas);
    if (url === null) {
      continue;
    }
    url.searchParams.set("range", button.dataset.chartRange);
    canvas.dataset.chartUrl = url.pathname + url.search + url.hash;

    const state = charts.get(canvas);
    if (state) {
      loadChart(canvas, state);
    }
  }
  syncCharts();

  const selector = "[data-chart-range][data-chart-target]";
  for (const other of document.querySelectorAll(selector)) {
    if (other.dataset.chartTarget === button.dataset.chartTarget) {
      other.setAttribute("aria-pressed", other === button ? "true" : "false");
    }
  }
}
