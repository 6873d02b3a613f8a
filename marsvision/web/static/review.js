/* The Review tab: a queue of the images whose labels would teach the model most (GET /api/review), one at a
   time, labelled from the keyboard: A/Enter accept the model's label, 1–5 a top-5 class, C the class picker,
   S/→ skip, ← back, H heatmap, ? help. Each stored label is a correction (PUT /api/images/{id}/label) and moves
   on; a refused write shows the server's reason and stays. When the queue is done: a summary, the next queue,
   and the model versions (POST /api/models/{version}/activate re-scores the archive).
   Builds on window.marsvision (app.js); the markup is #panel-review in index.html. */
"use strict";
(() => {
  const mv = window.marsvision;
  if (!mv) return;
  const { h, api, pct, plural, when, baseName, instrumentName } = mv;
  const $ = (sel) => document.querySelector(sel);
  const AUTHOR_KEY = "marsvision.author";
  const DEFAULT_LIMIT = 10;
  const panel = $("#panel-review"), stage = $("#r-stage"), done = $("#r-done"), empty = $("#r-empty");
  const img = $("#r-img"), frame = $("#r-frame"), picker = $("#r-class"), help = $("#r-help");
  const rv = {
    items: [], pos: 0, strategy: null, strategyKnown: false,
    outcome: new Map(),   // this queue: image id → {stored: label, how} or {skipped: true}
    reviewed: new Set(),  // image ids labelled in this page session (all queues)
    skipped: new Set(),   // image ids skipped in this page session: left out of the next queues
    classes: [], heatmap: false, busy: false, loading: false, started: false, ticket: 0,
    gridStale: false, focusAfterLoad: false, retries: 0,
  };

  // ---------------------------------------------------------------------------------------- messages
  /** What the last action did: shown beside the image and announced, with ``spoken`` (what is now on screen)
   *  for screen readers only. #r-live is outside the stage, so it is heard even when the stage hides. */
  function status(text, tone = "", spoken = "") {  // tone: "", "good" or "bad"
    const s = $("#r-status");
    s.textContent = text;
    s.classList.toggle("bad", tone === "bad");
    s.classList.toggle("good", tone === "good");
    $("#r-live").textContent = spoken ? `${text} ${spoken}` : text;
  }
  function showError(text) { const e = $("#r-error"); e.textContent = text; e.hidden = !text; }
  const current = () => (rv.pos < rv.items.length ? rv.items[rv.pos] : null);
  const authHeaders = () => { const t = mv.token(); return t ? { Authorization: `Bearer ${t}` } : {}; };
  const writes = () => (mv.state.ready ? mv.state.ready.writes : null);

  /** Says when labels cannot be stored as things are: writes disabled, or no token entered yet. */
  function showWrites() {
    const note = $("#r-writes"), mode = writes();
    let text = "";
    if (mode === "disabled") text = "This server does not accept corrections (writes are disabled): you can look through "
      + "the queue, but labels cannot be stored.";
    else if (mode === "token" && !mv.token()) text = "Enter the write token in the header to store labels.";
    note.textContent = text;
    note.hidden = !text;
  }

  function progress() {
    const n = rv.items.length;
    const where = !n ? "Empty queue" : rv.pos >= n ? `Queue of ${n} done` : `Image ${rv.pos + 1} of ${n}`;
    $("#r-progress").textContent = rv.started ? `${where} · ${rv.reviewed.size} reviewed this session` : "";
  }

  // -------------------------------------------------------------------------------------- the queue
  function readLimit() {
    const input = $("#r-limit");
    const n = Math.min(100, Math.max(1, Math.round(Number(input.value)) || DEFAULT_LIMIT));
    input.value = String(n);
    return n;
  }

  async function fetchQueue(focus) {
    const ticket = ++rv.ticket, n = readLimit();
    // Skipped images stay unreviewed, so the server would ask for them again first: ask for more, drop them.
    const q = new URLSearchParams({ limit: String(Math.min(100, n + rv.skipped.size)) });
    if (rv.strategyKnown) q.set("strategy", $("#r-strategy").value);  // the first time: the server's default
    rv.loading = true;
    $("#r-fetch").disabled = $("#r-next").disabled = true;
    showError("");
    status("Fetching the review queue…");
    try {
      const res = await api(`/api/review?${q}`);
      if (ticket !== rv.ticket) return;
      const select = $("#r-strategy");
      if (![...select.options].some((o) => o.value === res.strategy)) select.append(h("option", { value: res.strategy, text: res.strategy }));
      select.value = res.strategy;
      rv.strategyKnown = true;
      rv.strategy = res.strategy;
      rv.items = res.items.filter((it) => !rv.skipped.has(it.id)).slice(0, n);
      rv.outcome = new Map();
      rv.started = true;
      showWrites();
      if (!rv.classes.length) await loadClasses();
      const first = rv.items[0];
      focus = focus || rv.focusAfterLoad;  // the tab was clicked while this was loading
      rv.focusAfterLoad = false;
      const text = rv.items.length ? `Review queue (${res.strategy.replace(/_/g, "-")}): ${plural(rv.items.length, "image")}.`
        : "Nothing to review.";
      go(0, text, focus, describe(first, 0));
    } catch (e) {
      if (ticket !== rv.ticket) return;
      status("");
      showError(`Could not fetch the review queue: ${e.message}`);
    } finally {
      if (ticket === rv.ticket) {
        rv.loading = false;
        $("#r-fetch").disabled = $("#r-next").disabled = false;
      }
    }
  }

  async function loadClasses() {
    try {
      rv.classes = (await api("/api/classes")).classes.filter((c) => c.model).map((c) => c.label);
    } catch (e) {
      showError(`Could not load the classes: ${e.message}`);
    }
  }

  const describe = (item, i) => item ? `Image ${i + 1} of ${rv.items.length}: ${baseName(item.path)}, the model says ` +
    `${item.label ?? "nothing"} (${pct(item.confidence)}).` : "";

  /** Show queue position ``pos`` (the summary past the end); ``message`` (and ``spoken``) go to the status. */
  function go(pos, message, focus = true, spoken = "", tone = "") {
    rv.pos = Math.max(0, Math.min(pos, rv.items.length));
    const n = rv.items.length, item = current();
    stage.hidden = !item;
    done.hidden = !(n && rv.pos >= n);
    empty.hidden = Boolean(n);
    progress();
    if (item) showItem(item);
    else if (n) showDone();
    else $("#r-empty-text").textContent = rv.skipped.size
      ? `Every image is reviewed or was skipped in this session (${plural(rv.skipped.size, "skipped image")}; reload the page to see them again).`
      : "Every image with a prediction has a curator's label.";
    if (message != null) status(message, tone, spoken);
    if (!focus) return;
    const target = item ? stage : n ? $("#r-next") : $("#r-empty-title");
    target.focus({ preventScroll: true });
    const top = (item ? stage : target).getBoundingClientRect().top;
    if (top < 0 || top > innerHeight - 120) (item ? stage : target).scrollIntoView({ block: "start" });
  }

  // ----------------------------------------------------------------------------------- one image
  function showItem(item) {
    const name = baseName(item.path), out = rv.outcome.get(item.id);
    $("#r-stage-label").textContent = `Image ${rv.pos + 1} of ${rv.items.length}: ${name}`;
    $("#r-title").textContent = name;
    $("#r-where").textContent = item.sol != null ? `Sol ${item.sol} · ${instrumentName(item.instrument)}` : "";
    $("#r-label").textContent = item.label ?? "–";
    $("#r-conf").textContent = pct(item.confidence);
    $("#r-unknown").hidden = !item.unknown;
    $("#r-margin").textContent = `Margin to the runner-up: ${pct(item.review_margin ?? item.margin)}`
      + (item.novelty != null ? ` · novelty ${item.novelty.toFixed(2)}` : "");
    const stored = $("#r-stored");
    stored.hidden = !out;
    stored.textContent = !out ? "" : out.skipped ? "You skipped this image."
      : `You stored “${out.stored}” for this image${out.how === "accept" ? " (the model's label)" : ""}; `
        + "storing again adds another correction.";
    $("#r-accept-text").textContent = `Accept “${item.label ?? "–"}”`;
    $("#r-accept").disabled = !item.label;
    $("#r-topk").replaceChildren(...item.top_k.slice(0, 5).map(([label, p], i) => h("li", {},
      h("button", { type: "button", class: `choice${out && out.stored === label ? " chosen" : ""}`,
        dataset: { label }, "aria-keyshortcuts": String(i + 1), onclick: () => store(label, `top-${i + 1}`) },
        h("kbd", { text: String(i + 1) }),
        h("span", { class: "choice-label", text: label }),
        h("span", { class: "bar", "aria-hidden": "true" }, h("span", { style: `width:${(p * 100).toFixed(1)}%` })),
        h("span", { class: "choice-p", text: pct(p) })))));
    picker.replaceChildren(h("option", { value: "", text: "Choose a class…", disabled: true, selected: true }),
      ...rv.classes.map((l) => h("option", { value: l, text: l })));
    picker.value = "";
    $("#r-back").disabled = rv.pos === 0;
    setPicture();
  }

  function pictureSrc(item, heatmap) {
    return heatmap ? `/api/images/${item.id}/heatmap?size=512&label=${encodeURIComponent(item.label)}`
      : `/api/images/${item.id}/thumbnail?size=512`;
  }

  function setPicture() {
    const item = current();
    if (!item) return;
    const on = rv.heatmap && Boolean(item.label), src = pictureSrc(item, on), name = baseName(item.path);
    $("#r-heatmap").setAttribute("aria-pressed", String(on));
    $("#r-img-error").hidden = true;
    img.hidden = false;
    img.alt = on ? `Heatmap over ${name}: where the evidence for “${item.label}” lies` : `${name}, classified ${item.label ?? "–"}`;
    if (img.getAttribute("src") === src && img.complete && img.naturalWidth) return loaded();
    rv.retries = 0;
    frame.classList.add("loading");  // dims the previous picture until this one is there
    frame.setAttribute("aria-busy", "true");
    img.src = src;
  }

  function loaded() {
    frame.classList.remove("loading");
    frame.removeAttribute("aria-busy");
    const next = rv.items[rv.pos + 1];
    if (next) new Image().src = pictureSrc(next, rv.heatmap && Boolean(next.label));  // ready when it is asked for
  }

  img.addEventListener("load", loaded);
  img.addEventListener("error", async () => {
    const src = img.getAttribute("src");
    if (!src) return;
    let text = "The picture could not be loaded.", busy = false;
    try {
      const r = await fetch(src);
      if (!r.ok) { busy = r.status === 503; text = mv.errorText(r.status, await r.json()); }
    } catch { /* keep the general message */ }
    if (img.getAttribute("src") !== src) return;
    if (busy && rv.retries++ < 3) {  // a heatmap while the server's classification slots are taken
      setTimeout(() => { if (img.getAttribute("src") === src) { img.removeAttribute("src"); img.src = src; } }, 800);
      return;
    }
    frame.classList.remove("loading");
    frame.removeAttribute("aria-busy");
    img.hidden = true;
    const p = $("#r-img-error");
    p.textContent = text;
    p.hidden = false;
  });

  function toggleHeatmap() {
    rv.heatmap = !rv.heatmap;
    setPicture();
    const item = current();
    status(rv.heatmap ? `Heatmap on: brighter areas carry more evidence for “${item ? item.label : ""}”.` : "Heatmap off.");
  }

  // ----------------------------------------------------------------------------------------- actions
  /** Store ``label`` as the curator's label of the current image, then move on; a refusal stays here. */
  async function store(label, how) {
    const item = current();
    if (!item || rv.busy) return;
    if (!label) {
      status("Choose a class in the picker first.", "bad");
      picker.focus();
      return;
    }
    const name = baseName(item.path);
    const author = $("#r-author").value.trim();
    localStorage.setItem(AUTHOR_KEY, author);
    const note = `review queue (${rv.strategy}): ${how === "accept" ? "accepted the model's label" : how === "picker" ? "chosen in the class picker" : `the model's ${how}`}`;
    rv.busy = true;
    stage.setAttribute("aria-busy", "true");
    status(`Storing “${label}” for ${name}…`);
    try {
      await api(`/api/images/${item.id}/label`, { method: "PUT", body: JSON.stringify({ label, note, author }),
        headers: { "Content-Type": "application/json", ...authHeaders() } });
      rv.reviewed.add(item.id);
      rv.gridStale = true;
      if (current() !== item) return;  // another queue was fetched meanwhile
      rv.outcome.set(item.id, { stored: label, how });
      rv.skipped.delete(item.id);
      item.reviewed_label = label;
      rv.busy = false;
      const next = rv.items[rv.pos + 1];
      go(rv.pos + 1, `Stored “${label}” for ${name}.`, true,
        next ? describe(next, rv.pos + 1) : "That was the last image of the queue.", "good");
    } catch (err) {
      const hint = err.status === 401 ? " Enter the write token in the header, then press Enter there to come back." : "";
      status(`Not stored${err.status ? ` (${err.status})` : ""}: ${err.message}.${hint}`, "bad");
      if (err.status === 401) $("#token").focus();
    } finally {
      rv.busy = false;
      stage.removeAttribute("aria-busy");
    }
  }

  function accept() { const item = current(); if (item && item.label) store(item.label, "accept"); }

  function choose(k) {
    const item = current();
    if (!item) return;
    const entry = item.top_k[k - 1];
    if (entry) store(entry[0], `top-${k}`);
    else status(`The model gave no class number ${k} for this image.`, "bad");
  }

  function skip() {
    const item = current();
    if (!item || rv.busy) return;
    if (!(rv.outcome.get(item.id) || {}).stored) {  // skipping past a stored label keeps it
      rv.outcome.set(item.id, { skipped: true });
      rv.skipped.add(item.id);
    }
    const next = rv.items[rv.pos + 1];
    go(rv.pos + 1, `Skipped ${baseName(item.path)}.`, true,
      next ? describe(next, rv.pos + 1) : "That was the last image of the queue.");
  }

  function back() {
    if (rv.busy || !rv.items.length || rv.pos === 0) return;
    go(rv.pos - 1, `Back to image ${rv.pos} of ${rv.items.length}.`, true, describe(rv.items[rv.pos - 1], rv.pos - 1));
  }

  function focusPicker() {
    if (!current()) return;
    picker.focus();
    status("Class picker: choose with the arrow keys or by typing, Enter stores, Escape returns.");
  }

  function openHelp() {
    if (help.open) return help.close();
    help.showModal();
    $("#r-help-close").focus();
  }

  // ------------------------------------------------------------------------------------ the summary
  function showDone() {
    const out = [...rv.outcome.values()];
    const stored = out.filter((o) => o.stored).length, skipped = out.filter((o) => o.skipped).length;
    const n = rv.items.length;
    $("#r-summary").textContent = `${stored} reviewed · ${skipped} skipped`
      + (n - stored - skipped > 0 ? ` · ${n - stored - skipped} not seen` : "") + ` (of ${plural(n, "image")}).`
      + (rv.skipped.size ? " Skipped images are left out of the next queues until the page is reloaded." : "");
    $("#r-next").textContent = `Fetch the next ${readLimit()}`;
    loadModels();
  }

  async function loadModels() {
    const box = $("#r-models");
    try {
      const { models } = await api("/api/models");
      box.replaceChildren(h("table", { class: "models" },
        h("thead", {}, h("tr", {}, ["Version", "Created", "Parent", "Corrections", "Images", ""].map((t) =>
          h("th", { scope: "col", text: t })))),
        h("tbody", {}, models.slice().reverse().map((m) => h("tr", { class: m.active ? "active" : null },
          h("th", { scope: "row", class: "mono", text: m.version, title: m.path }),
          h("td", { text: when(m.created_at) }),
          h("td", { class: "mono", text: m.parent ?? "–" }),
          h("td", { text: String(m.corrections) }),
          h("td", { text: String(m.images) }),
          h("td", {}, m.active ? h("span", { class: "badge reviewed", text: "active" })
            : h("button", { type: "button", class: "button", "aria-label": `Activate ${m.version}`,
              onclick: (e) => activate(m.version, e.currentTarget), text: "Activate" })))))));
    } catch (e) {
      box.replaceChildren(h("p", { class: "bad", text: `Could not load the model versions: ${e.message}` }));
    }
  }

  async function activate(version, button) {
    const s = $("#r-models-status");
    button.disabled = true;
    s.classList.remove("bad", "good");
    s.textContent = `Activating ${version}: re-scoring the archive…`;
    try {
      const r = await api(`/api/models/${encodeURIComponent(version)}/activate`, { method: "POST", headers: authHeaders() });
      s.textContent = `Activated ${r.version}: ${plural(r.rescored, "image")} re-scored in ${r.seconds} s. `
        + "The Browse tab shows the new labels; fetch the next queue to review with this version.";
      s.classList.add("good");
      rv.classes = [];
      await Promise.all([loadModels(), mv.reload(), mv.loadReady(), mv.loadClasses(), loadClasses()]);
      rv.gridStale = false;
      s.focus();
    } catch (err) {
      const hint = err.status === 401 ? " Enter the write token in the header and try again." : "";
      s.textContent = `Not activated${err.status ? ` (${err.status})` : ""}: ${err.message}.${hint}`;
      s.classList.add("bad");
      if (button.isConnected) button.disabled = false;
    }
  }

  // ------------------------------------------------------------------------------------------- keys
  const TEXT_ENTRY = "input, select, textarea, [contenteditable]";
  document.addEventListener("keydown", (e) => {
    if (panel.hidden || e.defaultPrevented || e.ctrlKey || e.metaKey || e.altKey || e.isComposing) return;
    if (document.querySelector("dialog[open]")) return;  // the detail view or the help have their own keys
    const t = e.target instanceof Element ? e.target : document.body;
    if (t.closest(TEXT_ENTRY)) return;
    const onButton = Boolean(t.closest("button, a[href]")), inTabs = Boolean(t.closest(".tabs"));
    const key = e.key.length === 1 ? e.key.toLowerCase() : e.key;
    let action = null;
    if (key === "?") action = openHelp;
    else if (key === "ArrowLeft" && !inTabs) action = current() || rv.pos >= rv.items.length ? back : null;
    else if (current()) {
      if (key === "a" || (key === "Enter" && !onButton)) action = accept;
      else if (/^[1-5]$/.test(key)) action = () => choose(Number(key));
      else if (key === "c") action = focusPicker;
      else if (key === "s" || (key === "ArrowRight" && !inTabs)) action = skip;
      else if (key === "h") action = toggleHeatmap;
    }
    if (!action) return;
    e.preventDefault();
    action();
  });

  picker.addEventListener("keydown", (e) => {
    if (e.key === "Enter") { e.preventDefault(); store(picker.value, "picker"); }
    else if (e.key === "Escape") { e.preventDefault(); stage.focus(); status(""); }
  });
  $("#token").addEventListener("keydown", (e) => {  // back to the image once the token is in
    if (e.key === "Enter" && !panel.hidden && current()) { e.preventDefault(); stage.focus(); }
  });
  $("#token").addEventListener("input", showWrites);
  help.addEventListener("keydown", (e) => { if (e.key === "?") { e.preventDefault(); help.close(); } });
  help.addEventListener("close", () => {  // (fires a moment later: keys pressed since may have moved the focus)
    const a = document.activeElement;
    if (!a || a === document.body || help.contains(a)) (current() ? stage : rv.items.length ? $("#r-next") : $("#r-fetch")).focus();
  });
  help.addEventListener("click", (e) => { if (e.target === help) help.close(); });
  $("#r-help-close").addEventListener("click", () => help.close());
  $("#r-help-open").addEventListener("click", openHelp);

  // ------------------------------------------------------------------------------------ the controls
  $("#r-form").addEventListener("submit", (e) => { e.preventDefault(); fetchQueue(true); });
  $("#r-next").addEventListener("click", () => fetchQueue(true));
  $("#r-last").addEventListener("click", back);
  $("#r-accept").addEventListener("click", accept);
  $("#r-store").addEventListener("click", () => store(picker.value, "picker"));
  $("#r-skip").addEventListener("click", skip);
  $("#r-back").addEventListener("click", back);
  $("#r-heatmap").addEventListener("click", toggleHeatmap);
  $("#r-open").addEventListener("click", (e) => { const item = current(); if (item) mv.openDetail(item.id, e.currentTarget); });
  $("#r-author").value = localStorage.getItem(AUTHOR_KEY) || "";
  $("#r-author").addEventListener("change", () => {
    localStorage.setItem(AUTHOR_KEY, $("#r-author").value.trim());
    const other = $("#correct-author");
    if (other) other.value = $("#r-author").value.trim();
  });
  // A click on the tab (pointer, Enter or Space) means "start reviewing": the image takes the focus once it is
  // there. Arrow keys in the tab list only switch the view and leave the focus in the tab list.
  $("#tab-review").addEventListener("click", () => { rv.focusAfterLoad = true; });

  document.addEventListener("marsvision:tab", (e) => {
    const tab = e.detail && e.detail.tab;
    if (tab === "browse" && rv.gridStale) {  // the labels stored here show as badges there
      rv.gridStale = false;
      mv.reload();
    }
    if (tab !== "review") return;
    showWrites();
    if (document.activeElement !== $("#r-author")) $("#r-author").value = localStorage.getItem(AUTHOR_KEY) || "";
    if (rv.loading) return;  // fetchQueue takes rv.focusAfterLoad when it is done
    const focus = rv.focusAfterLoad;
    rv.focusAfterLoad = false;
    if (!rv.started) fetchQueue(focus);
    else if (focus) go(rv.pos, null, true);
  });
})();
