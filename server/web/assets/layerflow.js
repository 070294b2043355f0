// The results page's one script (no framework, no build step). It marks each
// figure once the browser has decoded it (data-decoded="WIDTHxHEIGHT", or
// "error"), and while a sweep runs it refreshes the states and progress
// from /api/sweeps/ID every 2 s, reloading a sweep's page when the sweep
// ends so that its figures and tables appear.
"use strict";
(function () {
  const FINAL = ["succeeded", "failed", "cancelled"];
  const REFRESH_MS = 2000;

  function markFigures() {
    for (const img of document.querySelectorAll("img.figure-image")) {
      const decoded = () => {
        img.dataset.decoded = img.naturalWidth + "x" + img.naturalHeight;
      };
      const failed = () => {
        img.dataset.decoded = "error";
        const note = document.createElement("p");
        note.className = "none";
        note.textContent = "This figure could not be loaded: " + img.src;
        img.replaceWith(note);
      };
      if (img.complete) {
        if (img.naturalWidth > 0) decoded(); else failed();
      } else {
        img.addEventListener("load", decoded);
        img.addEventListener("error", failed);
      }
    }
  }

  function setState(scope, state) {
    const cell = scope.querySelector('[data-field="state"]');
    if (!cell) return;
    cell.textContent = state;
    cell.className = "state state-" + state;
  }

  function setProgress(scope, field, value, max, text) {
    const bar = scope.querySelector("progress");
    if (bar) {
      bar.max = Math.max(max, 1);
      bar.value = value;
    }
    const label = scope.querySelector('[data-field="' + field + '"]');
    if (label) label.textContent = text;
  }

  async function refresh(element, reloadWhenDone) {
    const id = element.dataset.sweepId;
    let sweep;
    try {
      const response = await fetch("/api/sweeps/" + encodeURIComponent(id), { cache: "no-store" });
      if (!response.ok) return;
      sweep = await response.json();
    } catch (e) {
      return;  // the coordinator is restarting: try again later
    }
    setState(element, sweep.state);
    setProgress(element, "progress", sweep.chunks_committed, sweep.chunks_total, sweep.progress);
    for (const job of sweep.jobs || []) {
      const row = document.querySelector('tr.job[data-job-id="' + CSS.escape(job.job_id) + '"]');
      if (!row) continue;
      setState(row, job.state);
      setProgress(row, "chunks", job.chunks_committed, job.chunks_total,
                  job.chunks_committed + "/" + job.chunks_total);
      const attempts = row.querySelector('[data-field="attempts"]');
      if (attempts) attempts.textContent = job.attempts;
      const error = row.querySelector('[data-field="error"]');
      if (error) error.textContent = job.error;
    }
    if (FINAL.includes(sweep.state)) {
      element.dataset.live = "0";
      if (reloadWhenDone) window.location.reload();
      return;
    }
    setTimeout(() => refresh(element, reloadWhenDone), REFRESH_MS);
  }

  document.addEventListener("DOMContentLoaded", () => {
    markFigures();
    const page = document.getElementById("sweep");
    for (const element of document.querySelectorAll('[data-sweep-id][data-live="1"]')) {
      setTimeout(() => refresh(element, element === page), REFRESH_MS);
    }
  });
})();
