// featsync UI: live catalog filtering and copy buttons. No dependencies; the pages work without it
// (the filter form submits to the server, which applies the same rules to the same fields).
"use strict";
document.documentElement.classList.add("js");

function catalogFilter(form) {
  const rows = Array.from(document.querySelectorAll("table.catalog tbody tr"));
  const count = document.getElementById("count");
  const value = (name) => form.elements[name].value;
  const apply = () => {
    const words = value("q").toLowerCase().split(/\s+/).filter(Boolean);
    const entity = value("entity"), tag = value("tag"), owner = value("owner"), online = value("online");
    let shown = 0;
    for (const row of rows) {
      const d = row.dataset;
      const ok = words.every((w) => d.search.includes(w))
        && (!entity || d.entities.split(" ").includes(entity))
        && (!tag || d.tags.split(" ").includes(tag))
        && (!owner || d.owner === owner)
        && (!online || d.online === online);
      row.hidden = !ok;
      if (ok) shown += 1;
    }
    if (count) count.textContent = `${shown} of ${rows.length} shown`;
    const params = new URLSearchParams(new FormData(form));
    for (const [k, v] of Array.from(params.entries())) if (!v) params.delete(k);
    const query = params.toString();
    history.replaceState(null, "", query ? `?${query}` : location.pathname);
  };
  form.addEventListener("input", apply);
  form.addEventListener("change", apply);
  form.addEventListener("submit", (event) => { event.preventDefault(); apply(); });
}

function copyButtons() {
  for (const button of document.querySelectorAll("button[data-copy]")) {
    button.addEventListener("click", async () => {
      const text = document.getElementById(button.dataset.copy).textContent;
      try {
        await navigator.clipboard.writeText(text);
        button.textContent = "Copied";
      } catch (error) {
        const range = document.createRange();
        range.selectNodeContents(document.getElementById(button.dataset.copy));
        const selection = window.getSelection();
        selection.removeAllRanges();
        selection.addRange(range);
        button.textContent = "Selected: press Ctrl+C";
      }
      setTimeout(() => { button.textContent = "Copy"; }, 2000);
    });
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const form = document.querySelector("form[data-filter]");
  if (form) catalogFilter(form);
  copyButtons();
});
