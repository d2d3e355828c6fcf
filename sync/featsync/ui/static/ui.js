// featsync UI: live catalog filtering and copy buttons. No dependencies; the pages work without it
// (the filter form submits to the server, which applies the same rules to the same fields).
"use strict";
document.documentElement.classList.add("js");

// The catalog lists the first rows of each kind; #catalog-index holds every row (see
// featsync.ui.pages.catalog_index), which the filter reads, with the server's rules, to list the matches.
const KINDS = { feature_view: ["views", "feature views"], feature_service: ["services", "feature services"] };

function catalogFilter(form, data) {
  const count = document.getElementById("count");
  const base = form.getAttribute("action").replace(/\/$/, "");
  const limit = Number(data.dataset.rows) || Infinity;
  let index = null;  // parsed on the first filter, not while the page loads
  const value = (name) => form.elements[name].value;
  const cell = (tag, text, className) => {
    const node = document.createElement(tag);
    if (text !== undefined) node.textContent = text;
    if (className) node.className = className;
    return node;
  };
  const badge = (text, className) => cell("span", text, className);
  const row = ([kind, key, name, version, entities, online, ttl, tags, , owner, features, description]) => {
    const tr = cell("tr");
    tr.dataset.key = key;
    const th = cell("th");
    th.scope = "row";
    const link = cell("a", name);
    link.href = `${base}/${KINDS[kind][0]}/${encodeURIComponent(key)}`;
    th.append(link);
    tr.append(th, cell("td", `v${version}`), cell("td", entities.join(", ")));
    if (kind === "feature_view") {
      const flag = cell("td");
      flag.append(online ? badge("online", "badge ok") : badge("offline", "badge"));
      const tagCell = cell("td");
      for (const t of tags) tagCell.append(badge(t, "tag"), " ");
      tr.append(flag, cell("td", ttl), tagCell);
    }
    tr.append(cell("td", owner || "-"), cell("td", String(features)), cell("td", description, "desc"));
    return tr;
  };
  const apply = () => {
    index = index || JSON.parse(data.textContent);
    const words = value("q").toLowerCase().split(/\s+/).filter(Boolean);
    const entity = value("entity"), tag = value("tag"), owner = value("owner"), online = value("online");
    const matches = { feature_view: [], feature_service: [] };
    for (const r of index) {
      const [kind, , , , entities, isOnline, , , tagKeys, rowOwner, , , search] = r;
      const ok = words.every((w) => search.includes(w))
        && (!entity || entities.includes(entity))
        && (!tag || tagKeys.includes(tag))
        && (!owner || rowOwner === owner)
        && (!online || (isOnline !== null && isOnline === (online === "yes")));
      if (ok) matches[kind].push(r);
    }
    let truncated = false;
    for (const [kind, found] of Object.entries(matches)) {
      const listed = found.slice(0, limit);
      truncated = truncated || listed.length < found.length;
      document.querySelector(`table.catalog[data-kind=${kind}] tbody`).replaceChildren(...listed.map(row));
      const more = document.querySelector(`p.more[data-more=${kind}]`);
      more.hidden = listed.length === found.length;
      more.firstElementChild.textContent = `List all ${found.length} matching ${KINDS[kind][1]}`;
    }
    const shown = matches.feature_view.length + matches.feature_service.length;
    const listedNote = truncated ? `; the first ${limit} of each kind are listed` : "";
    if (count) count.textContent = `${shown} of ${index.length} shown${listedNote}`;
    const params = new URLSearchParams(new FormData(form));
    for (const [k, v] of Array.from(params.entries())) if (!v) params.delete(k);
    const all = new URLSearchParams(params);
    all.set("all", "1");
    for (const link of document.querySelectorAll("p.more a")) link.href = `${base}/?${all}`;
    if (limit === Infinity) params.set("all", "1");
    const query = params.toString();
    history.replaceState(null, "", query ? `?${query}` : location.pathname);
  };
  form.addEventListener("input", apply);
  form.addEventListener("change", apply);
  form.addEventListener("submit", (event) => { event.preventDefault(); apply(); });
  // Parse the index once the page has loaded and the browser is idle, so the first keystroke does not wait for it.
  const warm = () => { index = index || JSON.parse(data.textContent); };
  window.addEventListener("load", () => (window.requestIdleCallback || setTimeout)(warm));
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
  const data = document.getElementById("catalog-index");
  if (form && data) catalogFilter(form, data);
  copyButtons();
});
