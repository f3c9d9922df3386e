/** @type {import('tailwindcss').Config} */
module.exports = {
  // Tailwind emits only the classes it finds in these files, so every file
  // that writes a class name into the page must be listed here.
  content: [
    "./views/**/*.templ",
    "./views/**/*_templ.go",
    "./app/web/**/*.go",
    "./static/src/**/*.js",
  ],
  // Go code may build these names at run time ("badge-" + status), which
  // the content scan cannot see, so they are always emitted.
  safelist: [
    "badge-running",
    "badge-paused",
    "badge-draining",
    "badge-stopped",
    "badge-offline",
    "badge-pending",
  ],
  theme: {
    extend: {},
  },
  plugins: [],
};
