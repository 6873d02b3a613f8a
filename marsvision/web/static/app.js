/* The marsvision archive page: browse, filter and correct the archive through its REST API (/api).
   Plain JavaScript, no framework, no build step. Other views (the Review tab) can reuse what
   window.marsvision exposes: api, openDetail, showTab, token, reload, card, state, the formatters (h, pct, plural,
   when, baseName, instrumentName, errorText), loadClasses, loadReady and the "marsvision:tab" event.
   The Review tab lives in review.js. */
"use strict";
(() => {
  const $ = (sel, root = document) => root.querySelector(sel);
  // The form's filters, then those only a URL sets (kept until Reset): e.g. ?error=true lists the unreadable.
  const FILTER_KEYS = ["label", "min_confidence", "sol_min", "sol_max", "instrument", "unknown", "reviewed", "off_camera",
    "q", "target", "sequence_id", "confident"];
  const URL_ONLY = ["max_confidence", "reviewed_label", "error", "product_id", "filter_name", "site", "drive",
    "start_time_min", "start_time_max"];
  const VIEW_DEFAULTS = { sort: "id", descending: "false", page: "1", page_size: "48" };
  const CONTROLS = { label: "#f-label", min_confidence: "#f-min-confidence", sol_min: "#f-sol-min", sol_max: "#f-sol-max",
    instrument: "#f-instrument", unknown: "#f-unknown", reviewed: "#f-reviewed", off_camera: "#f-off-camera", q: "#f-q",
    target: "#f-target", sequence_id: "#f-sequence", confident: "#f-confident", sort: "#f-sort",
    descending: "#f-descending", page_size: "#f-page-size" };
  const TOKEN_KEY = "marsvision.token", AUTHOR_KEY = "marsvision.author";
  const state = { params: {}, classes: [], ready: null, items: [], request: 0, detail: null, detailTicket: 0,
    heatmap: false, openerId: null, opener: null };
  const grid = $("#grid"), dialog = $("#detail"), img = $("#detail-img");

  /** A DOM element: h("a", {href, class, text, onclick, dataset}, ...children). Text is never parsed as HTML. */
  function h(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (v == null || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else if (k === "dataset") Object.assign(node.dataset, v);
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat()) if (c != null && c !== false) node.append(c);
    return node;
  }

  // ------------------------------------------------------------------------------------------ API, formats
  function errorText(status, body) {
    const d = body && (body.detail ?? body.reason);
    if (typeof d === "string") return d;
    if (Array.isArray(d)) return d.map((e) => `${(e.loc || []).slice(1).join(".")}: ${e.msg}`).join("; ");
    return `HTTP ${status}`;
  }

  async function api(path, options = {}) {
    const res = await fetch(path, { ...options, headers: { Accept: "application/json", ...(options.headers || {}) } });
    let body = null;
    try { body = await res.json(); } catch { /* not JSON */ }
    if (!res.ok) throw Object.assign(new Error(errorText(res.status, body)), { status: res.status });
    return body;
  }

  const pct = (p) => p == null ? "–" : p >= 0.9995 ? ">99.9%" : p < 0.0005 ? "<0.1%" : `${(p * 100).toFixed(1)}%`;
  const baseName = (path) => String(path).split(/[\\/]/).pop();
  const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;
  /** An ISO time as "YYYY-MM-DD HH:MM UTC" (times without an offset are UTC: the archive stores UTC). */
  function when(iso) {
    if (!iso) return "";
    const t = new Date(/(Z|[+-]\d\d:?\d\d)$/i.test(iso) ? iso : `${iso}Z`);
    return isNaN(t) ? iso : `${t.toISOString().slice(0, 16).replace("T", " ")} UTC`;
  }
  const CAMERAS = { MH: "MAHLI", ML: "Mastcam Left", MR: "Mastcam Right", MD: "MARDI", NL: "Navcam Left",
    NR: "Navcam Right", FL: "Front Hazcam Left", FR: "Front Hazcam Right", RL: "Rear Hazcam Left",
    RR: "Rear Hazcam Right", CR: "ChemCam RMI" };
  const instrumentName = (code) => CAMERAS[code] || code;

  function setStatus(text) { $("#status").textContent = text; }
  function showError(text) { const e = $("#error"); e.textContent = text; e.hidden = !text; }
  function detailStatus(text, bad = false) {
    const s = $("#detail-status");
    s.textContent = text;
    s.classList.toggle("bad", bad);
  }

  // ---------------------------------------------------------------------------------- token (session only)
  const tokenInputs = [$("#token"), $("#detail-token")];
  const getToken = () => sessionStorage.getItem(TOKEN_KEY) || "";
  function setToken(value) {
    if (value) sessionStorage.setItem(TOKEN_KEY, value); else sessionStorage.removeItem(TOKEN_KEY);
    for (const input of tokenInputs) if (input.value !== value) input.value = value;
  }
  tokenInputs.forEach((input) => input.addEventListener("input", () => setToken(input.value.trim())));

  // ------------------------------------------------------------------------------ filters <-> form <-> URL
  function readUrl() {
    const q = new URLSearchParams(location.search), p = {};
    for (const k of [...FILTER_KEYS, ...URL_ONLY, ...Object.keys(VIEW_DEFAULTS)]) if (q.get(k)) p[k] = q.get(k);
    return p;
  }

  function ensureOption(select, value) {
    if (value && ![...select.options].some((o) => o.value === value)) select.append(h("option", { value, text: value }));
  }

  function readForm() {
    const p = {};
    for (const [k, sel] of Object.entries(CONTROLS)) {
      const input = $(sel);
      let v = input.type === "checkbox" ? (input.checked ? "true" : "") : input.value.trim();
      if (k === "min_confidence") v = v === "0" ? "" : String(Number(v) / 100);
      if (v !== "") p[k] = v;
    }
    return p;
  }

  function writeForm(p) {
    for (const [k, sel] of Object.entries(CONTROLS)) {
      const input = $(sel);
      let v = p[k] ?? VIEW_DEFAULTS[k] ?? "";
      if (k === "min_confidence") v = v === "" ? "0" : String(Math.round(Number(v) * 100));
      if (input.type === "checkbox") { input.checked = v === "true"; continue; }
      if (input.tagName === "SELECT") ensureOption(input, v);
      input.value = v;
    }
    showMinConfidence();
  }

  function showMinConfidence() {
    const v = $("#f-min-confidence").value;
    $("#f-min-confidence-out").textContent = v === "0" ? "any" : `≥ ${v}%`;
  }

  /** Only what differs from the defaults, so URLs stay short. */
  function urlQuery(p) {
    return new URLSearchParams(Object.entries(p).filter(([k, v]) => v !== "" && VIEW_DEFAULTS[k] !== v)).toString();
  }

  function apply(changes = {}, keepUrlOnly = true) {
    const kept = keepUrlOnly ? Object.entries(state.params).filter(([k]) => URL_ONLY.includes(k)) : [];
    state.params = { ...readForm(), ...Object.fromEntries(kept), page: "1", ...changes };
    const qs = urlQuery(state.params);
    if (qs !== location.search.slice(1)) history.pushState(null, "", qs ? `?${qs}` : location.pathname);
    return loadImages();
  }

  function setUrlImage(id) {
    const q = new URLSearchParams(location.search);
    if (id) q.set("image", id); else q.delete("image");
    history.replaceState(null, "", q.toString() ? `?${q}` : location.pathname);
  }

  /** The current filters as a query string (no sort or paging): what export, download, facets and timeline take. */
  const filterQuery = () => new URLSearchParams(Object.entries(state.params).filter(([k, v]) => !(k in VIEW_DEFAULTS) && v !== ""));

  function updateExport() {
    const q = filterQuery();
    $("#download-zip").href = `/api/download.zip${q.toString() ? `?${q}` : ""}`;
    for (const format of ["csv", "json"]) {
      q.set("format", format);
      $(`#export-${format}`).href = `/api/export?${q}`;
    }
  }

  // ------------------------------------------------------------------------------------------------ grid
  async function loadImages() {
    const ticket = ++state.request;
    setStatus("Loading…");
    showError("");
    grid.setAttribute("aria-busy", "true");
    updateExport();
    const q = new URLSearchParams(Object.entries({ ...VIEW_DEFAULTS, ...state.params }).filter(([, v]) => v !== ""));
    loadFacets(ticket);
    loadTimeline(ticket);
    try {
      const res = await api(`/api/images?${q}`);
      if (ticket !== state.request) return;
      state.items = res.items;
      grid.replaceChildren(...res.items.map((item) => h("li", { class: "cell" }, card(item))));
      const pages = Math.max(1, Math.ceil(res.total / res.page_size));
      $("#page-info").textContent = `Page ${res.page} of ${pages} · ${plural(res.total, "image")}`;
      $("#prev").disabled = res.page <= 1;
      $("#next").disabled = res.page >= pages;
      const first = (res.page - 1) * res.page_size + 1;
      const also = URL_ONLY.filter((k) => state.params[k]).map((k) => `${k}=${state.params[k]}`).join(", ");
      setStatus((!res.total ? "No images match these filters." : !res.items.length ? "No images on this page."
        : `${plural(res.total, "image")} match; showing ${first}–${first + res.items.length - 1}.`)
        + (also ? ` Also filtered by ${also} (from the URL; Reset clears it).` : ""));
    } catch (e) {
      if (ticket !== state.request) return;
      setStatus("");
      showError(`Could not load the images: ${e.message}`);
    } finally {
      if (ticket === state.request) grid.removeAttribute("aria-busy");
    }
  }

  /** A thumbnail card (a button that opens the detail view). */
  function card(item) {
    const name = baseName(item.path);
    const bad = Boolean(item.error);
    const thumb = bad ? h("div", { class: "placeholder", "aria-hidden": "true", text: "Unreadable" })
      : h("img", { src: `/api/images/${item.id}/thumbnail?size=192`, alt: `Thumbnail of ${name}`, loading: "lazy",
        width: 192, height: 192, onerror: (e) => e.target.replaceWith(h("div", { class: "placeholder", text: "No preview" })) });
    const badges = [
      item.unknown && h("span", { class: "badge unknown", title: "Unlike the images the model was trained on", text: "unknown" }),
      item.reviewed_label && h("span", { class: "badge reviewed", title: "The curator's label", text: `reviewed: ${item.reviewed_label}` }),
      item.off_camera && h("span", { class: "badge off-camera", text: "off-camera",
        title: `${instrumentName(item.instrument)}: a camera the model was not trained on (Mastcam, MAHLI); its label is less sure than its confidence says` }),
      bad && h("span", { class: "badge error", text: "unreadable" }),
    ];
    const where = item.sol != null ? `Sol ${item.sol} · ${instrumentName(item.instrument)}` : name;
    const button = h("button", { type: "button", class: `card${bad ? " unreadable" : ""}`, title: name,
      dataset: { id: item.id, label: item.label ?? "" }, onclick: () => openDetail(item.id, button) },
      h("span", { class: "thumb" }, thumb),
      h("span", { class: "card-body" },
        h("span", { class: "card-title" },
          h("span", { class: "card-label", text: bad ? name : item.label ?? "–" }),
          !bad && h("span", { class: "card-conf", text: pct(item.confidence) })),
        !bad && h("span", { class: "confbar", "aria-hidden": "true" },
          h("span", { style: `width:${Math.round((item.confidence || 0) * 100)}%` })),
        h("span", { class: "badges" }, badges),
        h("span", { class: "card-meta", text: bad ? item.error : where })));
    return button;
  }

  function updateCard(detail) {
    const i = state.items.findIndex((it) => it.id === detail.id);
    if (i >= 0) state.items[i] = { ...state.items[i], ...detail };
    const old = grid.querySelector(`.card[data-id="${detail.id}"]`);
    if (old) old.replaceWith(card(i >= 0 ? state.items[i] : detail));
  }

  /** Arrow keys, Home and End move between cards. */
  grid.addEventListener("keydown", (e) => {
    const cards = [...grid.querySelectorAll(".card")];
    const i = cards.indexOf(document.activeElement);
    if (i < 0 || e.altKey || e.ctrlKey || e.metaKey) return;
    const cols = cards.filter((c) => c.offsetTop === cards[0].offsetTop).length || 1;
    const step = { ArrowRight: 1, ArrowLeft: -1, ArrowDown: cols, ArrowUp: -cols, Home: -i, End: cards.length - 1 - i }[e.key];
    if (step === undefined) return;
    e.preventDefault();
    cards[Math.min(cards.length - 1, Math.max(0, i + step))].focus();
  });

  // ---------------------------------------------------------------------------------------- detail view
  async function openDetail(id, opener) {
    const ticket = ++state.detailTicket;
    if (!dialog.open) {
      state.opener = opener || document.activeElement;
      state.openerId = opener && opener.dataset ? opener.dataset.id : null;
      dialog.showModal();
    }
    detailStatus("Loading…");
    loadSimilar(id, ticket);
    try {
      const d = await api(`/api/images/${id}`);
      if (ticket !== state.detailTicket) return;
      showDetail(d);
      detailStatus("");
      setUrlImage(id);
      $("#detail-title").focus();
    } catch (e) {
      if (ticket === state.detailTicket) detailStatus(`Could not load image ${id}: ${e.message}`, true);
    }
  }

  function showDetail(d) {
    state.heatmap = false;
    $("#heatmap-label").replaceChildren(...(d.top_k.length ? d.top_k : [[d.label]]).filter(([l]) => l)
      .map(([l]) => h("option", { value: l, text: l })));
    $("#heatmap-controls").hidden = Boolean(d.error);
    $("#detail-file").href = `/api/images/${d.id}/file`;
    $("#correct-note").value = "";
    renderInfo(d);
    setPicture();
  }

  function setPicture() {
    const d = state.detail, on = state.heatmap, label = $("#heatmap-label").value;
    const name = baseName(d.path);
    $("#heatmap-toggle").setAttribute("aria-pressed", String(on));
    $("#detail-img-error").hidden = true;
    img.hidden = false;
    delete img.dataset.fallback;
    if (d.error) return pictureError(`This file could not be read: ${d.error}`);
    img.alt = on ? `Heatmap over ${name}: where the evidence for "${label}" lies` : `${name}, classified ${d.label}`;
    if (on) detailStatus(`Computing the heatmap for "${label}"…`);
    img.src = on ? `/api/images/${d.id}/heatmap?size=512&label=${encodeURIComponent(label)}` : `/api/images/${d.id}/file`;
  }

  function pictureError(text) {
    img.hidden = true;
    img.removeAttribute("src");
    const p = $("#detail-img-error");
    p.textContent = text;
    p.hidden = false;
  }

  img.addEventListener("load", () => {
    if (state.heatmap) detailStatus(`Heatmap: brighter areas carry more evidence for "${$("#heatmap-label").value}".`);
  });
  img.addEventListener("error", async () => {
    const src = img.getAttribute("src");
    if (!src || !state.detail) return;
    if (src.endsWith("/file") && !img.dataset.fallback) {  // a format the browser cannot show: the server's JPEG
      img.dataset.fallback = "1";
      img.src = `/api/images/${state.detail.id}/thumbnail?size=512`;
      return;
    }
    let text = "The picture could not be loaded.";
    try { const r = await fetch(src); if (!r.ok) text = errorText(r.status, await r.json()); } catch { /* keep */ }
    if (img.getAttribute("src") !== src) return;
    pictureError(text);
    detailStatus(text, true);
  });

  $("#heatmap-toggle").addEventListener("click", () => { state.heatmap = !state.heatmap; setPicture(); });
  $("#heatmap-label").addEventListener("change", () => { if (state.heatmap) setPicture(); });

  function modelClasses() {
    const n = state.ready ? state.ready.classes : state.classes.length;
    return state.classes.slice(0, n).map((c) => c.label);
  }

  /** Everything but the picture (so a correction does not reload it). */
  function renderInfo(d) {
    state.detail = d;
    const name = baseName(d.path);
    $("#detail-title").textContent = name;
    const row = (term, ...value) => [h("dt", { text: term }), h("dd", {}, ...value)];
    $("#detail-summary").replaceChildren(h("dl", {},
      row("Model's label", h("strong", { text: d.label ?? "–" }),
        d.unknown && h("span", { class: "badge unknown", text: "unknown" }),
        d.off_camera && h("span", { class: "badge off-camera", text: "off-camera", title: "A camera the model was not trained on" })),
      row("Confidence", pct(d.confidence)),
      row("Margin", d.margin == null ? "–" : pct(d.margin)),
      row("Novelty", d.novelty == null ? "–" : d.novelty.toFixed(3)),
      row("Curator's label", d.reviewed_label ? h("span", { class: "badge reviewed", text: d.reviewed_label }) : "not reviewed",
        d.reviewed_at && h("span", { class: "muted", text: ` ${when(d.reviewed_at)}` })),
      d.error && row("Error", h("span", { class: "bad", text: d.error }))));

    $("#detail-topk").replaceChildren(...d.top_k.map(([label, p]) => h("li", { class: label === d.label ? "top" : null },
      h("span", { class: "topk-label", text: label }),
      h("span", { class: "bar", "aria-hidden": "true" }, h("span", { style: `width:${(p * 100).toFixed(1)}%` })),
      h("span", { class: "topk-p", text: pct(p) }))));
    if (!d.top_k.length) $("#detail-topk").append(h("li", { class: "muted", text: "No prediction." }));

    const select = $("#correct-label");
    select.replaceChildren(h("option", { value: "", text: "Choose a class…", disabled: true }),
      ...modelClasses().map((l) => h("option", { value: l, text: l })));
    select.value = d.reviewed_label || d.label || "";

    const history = d.corrections.slice().reverse();
    $("#detail-history").replaceChildren(history.length ? h("table", { class: "history" },
      h("thead", {}, h("tr", {}, ["When", "Label", "Model said", "Author", "Note"].map((t) => h("th", { scope: "col", text: t })))),
      h("tbody", {}, history.map((c) => h("tr", {},
        [when(c.created_at), c.label, c.model_label ?? "–", c.author, c.note].map((t) => h("td", { text: t || "" }))))))
      : h("p", { class: "muted", text: "No corrections yet." }));

    const f = d.name_fields || {};
    const meta = [["File", name], ["Path", d.path]];
    if (f.sol != null) {
      meta.push(["Sol", f.sol], ["Instrument", `${f.instrument_name} (${f.instrument})`], ["Sequence", f.sequence],
        ["Command", f.command], ["CDPID counter", f.cdpid_counter], ["CDPID", f.cdpid], ["Product type", f.product_type],
        ["GOP counter", f.gop], ["Version", f.version], ["Processing", f.processing || "–"]);
    } else {
      meta.push(["Name fields", "the name does not follow the MSL pattern"]);
    }
    if (d.product_id) {  // a PDS product's label fields
      meta.push(["Product id", d.product_id], ["Instrument id", d.instrument_id], ["Start time (UTC)", when(d.start_time)],
        ["Local mean solar time", d.local_mean_solar_time], ["Sequence", d.sequence_id], ["Filter", d.filter_name],
        ["Target", d.target], ["Size (lines × samples × bands)", `${d.lines} × ${d.samples} × ${d.bands}`],
        ["Site / drive", `${d.site ?? "–"} / ${d.drive ?? "–"}`]);
    }
    if (d.off_camera != null) meta.push(["Camera", `${instrumentName(d.instrument)}${d.off_camera ? " (not a training camera)" : ""}`]);
    meta.push(["Size", `${(d.size_bytes / 1024).toFixed(1)} KB`], ["SHA-256", d.sha256], ["Indexed", when(d.indexed_at)],
      ["Model version", d.model_version ?? "–"]);
    $("#detail-meta tbody").replaceChildren(...meta.map(([k, v]) =>
      h("tr", {}, h("th", { scope: "row", text: k }), h("td", { text: String(v ?? "–") }))));
  }

  async function loadSimilar(id, ticket) {
    const list = $("#detail-similar");
    list.replaceChildren(h("li", { class: "muted", text: "Loading…" }));
    try {
      const res = await api(`/api/images/${id}/similar?k=12`);
      if (ticket !== state.detailTicket) return;
      list.replaceChildren(...(res.items.length ? res.items.map((it) => h("li", {},
        h("button", { type: "button", class: "sim", title: `${baseName(it.path)}: similarity ${it.similarity.toFixed(2)}`,
          dataset: { id: it.id }, onclick: () => openDetail(it.id) },
          h("img", { src: `/api/images/${it.id}/thumbnail?size=128`, alt: `${baseName(it.path)}, classified ${it.label ?? "–"}`,
            loading: "lazy", width: 96, height: 96 }),
          h("span", { class: "sim-label", text: it.reviewed_label || it.label || "–" }),
          h("span", { class: "sim-score", text: `sim ${it.similarity.toFixed(2)}` }))))
        : [h("li", { class: "muted", text: "No similar images." })]));
    } catch (e) {
      if (ticket === state.detailTicket) list.replaceChildren(h("li", { class: "muted", text: `Could not load similar images: ${e.message}` }));
    }
  }

  $("#correct").addEventListener("submit", async (e) => {
    e.preventDefault();
    const d = state.detail;
    if (!d) return;
    const button = $("#correct-submit"), token = getToken();
    const body = { label: $("#correct-label").value, note: $("#correct-note").value.trim(), author: $("#correct-author").value.trim() };
    localStorage.setItem(AUTHOR_KEY, body.author);
    button.disabled = true;
    detailStatus("Saving…");
    try {
      const updated = await api(`/api/images/${d.id}/label`, { method: "PUT", body: JSON.stringify(body),
        headers: { "Content-Type": "application/json", ...(token ? { Authorization: `Bearer ${token}` } : {}) } });
      if (state.detail && state.detail.id === d.id) renderInfo(updated);
      $("#correct-note").value = "";
      updateCard(updated);
      detailStatus(`Saved: the curator's label is now "${updated.reviewed_label}" (the model's label stays "${updated.label}").`);
      loadClasses();
    } catch (err) {
      const hint = err.status === 401 ? " Enter the write token and try again." : "";
      detailStatus(`Not saved${err.status ? ` (${err.status})` : ""}: ${err.message}.${hint}`, true);
      if (err.status === 401) $("#detail-token").focus();
    } finally {
      button.disabled = false;
    }
  });

  $("#detail-close").addEventListener("click", () => dialog.close());
  dialog.addEventListener("click", (e) => { if (e.target === dialog) dialog.close(); });  // the backdrop
  dialog.addEventListener("close", () => {
    state.detailTicket++;
    img.removeAttribute("src");
    setUrlImage(null);
    const back = (state.openerId && grid.querySelector(`.card[data-id="${state.openerId}"]`)) || state.opener;
    if (back && back.isConnected) back.focus();
  });

  // --------------------------------------------------------------------------- facets and the timeline
  /** The count of each value beside each filter: from /api/facets, under every filter but the facet's own. */
  async function loadFacets(ticket) {
    let res;
    try { res = await api(`/api/facets?${filterQuery()}`); } catch { return; }  // the grid shows the error
    if (ticket !== state.request) return;
    state.facets = res;
    const counts = (name) => new Map(res.facets[name].map((v) => [String(v.value), v.count]));
    const label = counts("label");
    for (const o of $("#f-label").options) {
      if (o.value) o.textContent = `${o.value} (${label.get(o.value) ?? 0})`;
      o.dataset.count = o.value ? (label.get(o.value) ?? 0) : "";
    }
    const instrument = $("#f-instrument"), keep = instrument.value, inst = counts("instrument");
    const codes = [...new Set([...res.facets.instrument.map((v) => v.value).filter((v) => v != null), keep].filter(Boolean))];
    instrument.replaceChildren(h("option", { value: "", text: "Any" }), ...codes.map((c) =>
      h("option", { value: c, text: `${instrumentName(c)} (${inst.get(c) ?? 0})`, dataset: { count: inst.get(c) ?? 0 } })));
    instrument.value = keep;
    for (const [name, sel] of [["unknown", "#f-unknown"], ["reviewed", "#f-reviewed"], ["off_camera", "#f-off-camera"]]) {
      const c = counts(name);
      for (const o of $(sel).options) {
        if (!o.value) continue;
        o.textContent = `${o.value === "true" ? "Yes" : "No"} (${c.get(o.value) ?? 0})`;
        o.dataset.count = c.get(o.value) ?? 0;
      }
    }
    $("#f-confident-count").textContent = `(${counts("confident").get("true") ?? 0})`;
  }

  const PALETTE = ["#1f5fbf", "#c1440e", "#2e8b57", "#8e44ad", "#d4a017", "#17a2b8", "#7f8c8d", "#e84393", "#5d4037"];
  const SVG = "http://www.w3.org/2000/svg";
  function s(tag, attrs = {}, ...children) {  // an SVG element
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) if (v != null) node.setAttribute(k, v);
    for (const c of children) if (c) node.append(c);
    return node;
  }

  /** The per-sol timeline: stacked bars (the largest 8 series, then "other"), sols binned to at most 200 bars. */
  async function loadTimeline(ticket) {
    const by = $("#timeline-by").value, q = filterQuery();
    q.set("by", by);
    let res;
    try { res = await api(`/api/timeline?${q}`); } catch { return; }
    if (ticket !== state.request) return;
    drawTimeline(res);
  }

  function drawTimeline(res) {
    const chart = $("#timeline-chart"), [selMin, selMax] = res.selected;
    $("#timeline-clear").hidden = selMin == null && selMax == null;
    $("#timeline-range").textContent = selMin == null && selMax == null ? "" : `showing sols ${selMin ?? "…"}–${selMax ?? "…"}`;
    if (!res.sols.length) {
      chart.replaceChildren(h("p", { class: "muted", text: "No images with a sol under these filters." }));
      $("#timeline-legend").replaceChildren();
      return;
    }
    const first = res.sols[0], last = res.sols[res.sols.length - 1];
    const width = Math.max(1, Math.ceil((last - first + 1) / 200));  // sols per bar
    const nbins = Math.floor((last - first) / width) + 1;
    const top = res.series.slice(0, 8), other = res.series.slice(8);
    const keys = [...top.map((x) => x.key ?? "none"), ...(other.length ? ["other"] : [])];
    const bins = Array.from({ length: nbins }, () => new Array(keys.length).fill(0));
    res.series.forEach((series, k) => series.counts.forEach((n, i) => {
      bins[Math.floor((res.sols[i] - first) / width)][Math.min(k, 8)] += n;
    }));
    const W = 1000, H = 120, AXIS = 14, barW = W / nbins;
    const max = Math.max(1, ...bins.map((b) => b.reduce((a, n) => a + n, 0)));
    const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", role: "img",
      "aria-label": `Images per sol by ${res.by}, sols ${first} to ${last}` });
    bins.forEach((bin, i) => {
      const lo = first + i * width, hi = lo + width - 1, total = bin.reduce((a, n) => a + n, 0);
      const selected = (selMin != null || selMax != null) && hi >= (selMin ?? -Infinity) && lo <= (selMax ?? Infinity);
      const g = s("g", { class: "tl-bin", "data-sol-min": lo, "data-sol-max": hi, "data-count": total });
      g.append(s("rect", { class: selected ? "tl-hit tl-selected" : "tl-hit", x: i * barW, y: 0, width: barW, height: H - AXIS }));
      let y = H - AXIS;
      bin.forEach((n, k) => {
        if (!n) return;
        const hgt = (n / max) * (H - AXIS - 4);
        y -= hgt;
        g.append(s("rect", { x: i * barW + barW * 0.1, y, width: Math.max(barW * 0.8, 0.5), height: hgt, fill: PALETTE[k] }));
      });
      g.append(s("title", {}, document.createTextNode(`Sol ${lo}${width > 1 ? `–${hi}` : ""}: ${plural(total, "image")}` +
        bin.map((n, k) => n ? `\n${keys[k] === "none" ? "–" : res.by === "camera" ? instrumentName(keys[k]) : keys[k]}: ${n}` : "").join(""))));
      g.addEventListener("click", () => {
        $("#f-sol-min").value = lo;
        $("#f-sol-max").value = hi;
        apply();
      });
      svg.append(g);
    });
    svg.append(s("text", { class: "tl-axis", x: 2, y: H - 2 }, document.createTextNode(`sol ${first}`)),
      s("text", { class: "tl-axis", x: W - 2, y: H - 2, "text-anchor": "end" }, document.createTextNode(`sol ${last}`)));
    chart.replaceChildren(svg);
    $("#timeline-legend").replaceChildren(...keys.map((k, i) => h("li", {},
      h("span", { class: "swatch", style: `background:${PALETTE[i]}` }),
      k === "none" ? "–" : k === "other" ? "other" : res.by === "camera" ? instrumentName(k) : k)));
  }

  $("#timeline-by").addEventListener("change", (e) => { e.stopPropagation(); loadTimeline(state.request); });
  $("#timeline-clear").addEventListener("click", () => { $("#f-sol-min").value = ""; $("#f-sol-max").value = ""; apply(); });

  // ------------------------------------------------------------------------------------------------ tabs
  const tabs = () => [...document.querySelectorAll('[role="tab"]')].filter((t) => !t.hidden);
  function showTab(name) {
    for (const tab of document.querySelectorAll('[role="tab"]')) {
      const on = tab.id === `tab-${name}`;
      tab.setAttribute("aria-selected", String(on));
      tab.tabIndex = on ? 0 : -1;
      $(`#${tab.getAttribute("aria-controls")}`).hidden = !on;
    }
    document.dispatchEvent(new CustomEvent("marsvision:tab", { detail: { tab: name } }));
  }
  $(".tabs").addEventListener("click", (e) => { const t = e.target.closest('[role="tab"]'); if (t) showTab(t.id.slice(4)); });
  $(".tabs").addEventListener("keydown", (e) => {
    const list = tabs(), i = list.indexOf(document.activeElement);
    const j = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: list.length - 1 }[e.key];
    if (i < 0 || j === undefined) return;
    e.preventDefault();
    const t = list[(j + list.length) % list.length];
    t.focus();
    showTab(t.id.slice(4));
  });

  // ------------------------------------------------------------------------------------- server metadata
  async function loadClasses() {
    try {
      state.classes = (await api("/api/classes")).classes;
      const select = $("#f-label"), keep = select.value;
      select.replaceChildren(h("option", { value: "", text: "All classes" }),
        ...state.classes.map((c) => h("option", { value: c.label, text: `${c.label} (${c.count})` })));
      ensureOption(select, keep);
      select.value = keep;
      if (state.facets) loadFacets(state.request);  // the counts beside the classes: under the filters again
    } catch (e) {
      showError(`Could not load the classes: ${e.message}`);
    }
  }

  async function loadReady() {
    const info = $("#server-info");
    try {
      state.ready = await api("/readyz");
      info.textContent = `Model ${state.ready.model} · ${state.ready.classes} classes · ${state.ready.database}`;
    } catch (e) {
      info.textContent = `Server not ready: ${e.message}`;
      info.classList.add("bad");
    }
  }

  // ---------------------------------------------------------------------------------------------- events
  let timer = 0;
  const form = $("#filters");
  form.addEventListener("change", () => { clearTimeout(timer); timer = setTimeout(() => apply(), 200); });
  form.addEventListener("submit", (e) => { e.preventDefault(); clearTimeout(timer); apply(); });
  $("#f-min-confidence").addEventListener("input", showMinConfidence);
  $("#reset").addEventListener("click", () => { writeForm({}); apply({}, false); });
  function turn(by) {
    apply({ page: String(Math.max(1, Number(state.params.page || 1) + by)) });
    $(".toolbar").scrollIntoView({ block: "start" });
  }
  $("#prev").addEventListener("click", () => turn(-1));
  $("#next").addEventListener("click", () => turn(1));
  window.addEventListener("popstate", () => {
    state.params = readUrl();
    writeForm(state.params);
    loadImages();
  });

  async function start() {
    setToken(getToken());
    $("#correct-author").value = localStorage.getItem(AUTHOR_KEY) || "";
    const ready = loadReady();
    fetch("/api/review?limit=1").then((r) => { if (r.ok) $("#tab-review").hidden = false; }).catch(() => {});
    await Promise.all([loadClasses(), ready]);
    state.params = readUrl();
    writeForm(state.params);
    await loadImages();
    const image = Number(new URLSearchParams(location.search).get("image"));
    if (image) openDetail(image, grid.querySelector(`.card[data-id="${image}"]`));
  }

  window.marsvision = { api, openDetail, showTab, token: getToken, reload: loadImages, card, state,
    h, pct, plural, when, baseName, instrumentName, errorText, loadClasses, loadReady, loadFacets, loadTimeline };
  start();
})();
