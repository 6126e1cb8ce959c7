// nstyle's page: plain JavaScript, no framework and no CDN (the server may be offline).
// Everything goes through the JSON API under /api; the event stream is read with fetch()
// rather than EventSource because EventSource cannot send the bearer token.
"use strict";

const $ = (id) => document.getElementById(id);
const el = (tag, props = {}, ...children) => {
  const node = Object.assign(document.createElement(tag), props);
  for (const c of children) node.append(c);
  return node;
};

const state = {
  token: sessionStorage.getItem("nstyle-token"),
  info: null,
  content: null,        // File
  styles: [],           // File[]
  controls: new Map(),  // option name -> () => value string ("" = default)
  setters: new Map(),   // option name -> (value string) => void
  job: null,            // the job shown on the stage
  stream: null,         // AbortController of its event stream
  objectUrls: [],
};

// ---------------------------------------------------------------- API

class ApiError extends Error {
  constructor(status, detail) { super(detail); this.status = status; }
}

async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  if (state.token) headers.set("Authorization", `Bearer ${state.token}`);
  const response = await fetch(path, { ...options, headers });
  if (response.status === 401) {
    await askToken();
    return api(path, options);
  }
  if (!response.ok) {
    let detail = `${response.status} ${response.statusText}`;
    try {
      const body = await response.json();
      if (typeof body.detail === "string") detail = body.detail;
      else if (Array.isArray(body.detail)) detail = body.detail.map((d) => d.msg).join("; ");
    } catch (_) { /* not JSON */ }
    throw new ApiError(response.status, detail);
  }
  return response;
}

const apiJson = async (path, options) => (await api(path, options)).json();

// Images behind a token cannot be plain <img src> URLs: fetch them as blobs instead.
async function imageUrl(path) {
  if (!state.token) return path;
  const blob = await (await api(path)).blob();
  const url = URL.createObjectURL(blob);
  state.objectUrls.push(url);
  return url;
}

function askToken() {
  return new Promise((resolve) => {
    const dialog = $("token-dialog");
    $("token-form").onsubmit = () => {
      state.token = $("token-input").value.trim();
      sessionStorage.setItem("nstyle-token", state.token);
      resolve();
    };
    if (!dialog.open) dialog.showModal();
  });
}

// ---------------------------------------------------------------- formatting

const fmtSci = (x) => {
  if (!isFinite(x)) return String(x);
  if (x === 0) return "0";
  const e = Math.floor(Math.log10(Math.abs(x)));
  if (e >= -2 && e <= 4) return Number(x.toPrecision(3)).toLocaleString("en");
  return `${(x / 10 ** e).toFixed(1)}e${e}`;
};
const fmtTime = (s) => {
  if (s == null || !isFinite(s)) return "";
  s = Math.max(0, Math.round(s));
  const m = Math.floor(s / 60), r = s % 60;
  return m ? `${m} min ${String(r).padStart(2, "0")} s` : `${r} s`;
};
const fmtAgo = (iso) => {
  if (!iso) return "";
  const s = (Date.now() - new Date(iso).getTime()) / 1000;
  if (s < 60) return "just now";
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return new Date(iso).toLocaleDateString();
};
const fmtBytes = (n) => (n >= 2 ** 20 ? `${(n / 2 ** 20).toFixed(1)} MB` : `${Math.ceil(n / 1024)} kB`);

// ---------------------------------------------------------------- options

// The few options that get a slider; the rest are generated from GET /api/info, so a new
// engine option shows up here without touching the page.
const MAIN_OPTIONS = [
  { name: "style_weight", label: "Style weight", kind: "log", min: 1, max: 8, step: 0.1,
    help: "how strongly the painting's texture wins over the photo's content" },
  { name: "size", label: "Output size", kind: "range", min: 64, step: 32, unit: "px" },
  { name: "iterations", label: "Iterations", kind: "range", min: 10, max: 1000, step: 10 },
];
const COLOUR_OPTION = /colou?r/i;

function buildControls(info) {
  const options = new Map(info.options.map((o) => [o.name, o]));
  const main = $("main-controls");
  const used = new Set();
  for (const spec of MAIN_OPTIONS) {
    const opt = options.get(spec.name);
    if (!opt) continue;
    used.add(spec.name);
    main.append(sliderControl(spec, opt, info));
  }
  for (const opt of info.options) {  // colour preservation, when the engine has it
    if (used.has(opt.name) || !COLOUR_OPTION.test(opt.name)) continue;
    used.add(opt.name);
    main.append(genericControl(opt, true));
  }
  const advanced = $("advanced-controls");
  for (const opt of info.options) {
    if (!used.has(opt.name)) advanced.append(genericControl(opt, false));
  }
}

function sliderControl(spec, opt, info) {
  const id = `opt-${spec.name}`;
  const input = el("input", { type: "range", id, step: spec.step });
  const out = el("output", { htmlFor: id });
  let max = spec.max;
  let help = spec.help || opt.help;
  if (spec.name === "size") {
    max = info.limits.max_size;
    help = `longest side of the output (this server allows up to ${max} px); larger is slower`;
  }
  input.min = spec.min;
  input.max = max;
  const toValue = () => (spec.kind === "log" ? Number((10 ** Number(input.value)).toPrecision(2)) : Number(input.value));
  const show = () => {
    const v = toValue();
    out.value = spec.kind === "log" ? fmtSci(v) : `${v}${spec.unit ? " " + spec.unit : ""}`;
  };
  const set = (value) => {
    const v = Number(value);
    input.value = spec.kind === "log" ? Math.log10(v) : Math.min(Math.max(v, spec.min), max);
    show();
  };
  set(opt.default);
  input.addEventListener("input", show);
  state.controls.set(spec.name, () => String(toValue()));
  state.setters.set(spec.name, set);
  return el("div", { className: "control" },
    el("label", { htmlFor: id }, el("span", { textContent: spec.label }), out),
    input,
    el("div", { className: "help", textContent: help }));
}

function genericControl(opt, prominent) {
  const id = `opt-${opt.name}`;
  const label = prominent ? opt.name.replace(/_/g, " ").replace(/^\w/, (c) => c.toUpperCase()) : opt.name;
  const wrap = el("div", { className: "control", title: opt.help });
  let get, set;
  if (opt.type === "bool") {
    const box = el("input", { type: "checkbox", id, checked: Boolean(opt.default) });
    wrap.classList.add("check");
    wrap.append(el("label", { htmlFor: id }, box, el("span", { textContent: label })));
    get = () => String(box.checked);
    set = (v) => { box.checked = v === true || v === "true" || v === "1"; };
  } else if (opt.choices) {
    const select = el("select", { id });
    for (const c of opt.choices) {
      select.append(el("option", { value: c, textContent: c === opt.default ? `${c} (default)` : c }));
    }
    select.value = opt.default ?? "";
    wrap.append(el("label", { htmlFor: id, textContent: label }), select);
    get = () => (select.value === String(opt.default) ? "" : select.value);
    set = (v) => { select.value = v; };
  } else {
    const shown = Array.isArray(opt.default) ? opt.default.join(",") : opt.default;
    const input = el("input", { type: "text", id, placeholder: shown == null ? "auto" : String(shown), spellcheck: false });
    wrap.append(el("label", { htmlFor: id, textContent: label }), input);
    get = () => input.value.trim();
    set = (v) => { input.value = v; };
  }
  if (prominent) wrap.append(el("div", { className: "help", textContent: opt.help }));
  state.controls.set(opt.name, get);
  state.setters.set(opt.name, set);
  return wrap;
}

// ---------------------------------------------------------------- picking images

function isImage(file) {
  return file && (file.type.startsWith("image/") || /\.(png|jpe?g|webp|bmp|tiff?|gif)$/i.test(file.name));
}

function checkFile(file) {
  const limit = state.info?.limits.max_upload_bytes;
  if (limit && file.size > limit) {
    showFormError(`${file.name} is ${fmtBytes(file.size)}, over this server's limit of ${fmtBytes(limit)}`);
    return false;
  }
  return true;
}

function setContent(file) {
  if (!isImage(file) || !checkFile(file)) return;
  state.content = file;
  const img = $("content-preview");
  img.src = URL.createObjectURL(file);
  img.hidden = false;
  $("content-prompt").hidden = true;
  updateStart();
}

function addStyles(files) {
  const max = state.info?.limits.max_styles ?? 5;
  for (const file of files) {
    if (!isImage(file) || !checkFile(file)) continue;
    if (state.styles.length >= max) {
      showFormError(`at most ${max} style images per job`);
      break;
    }
    state.styles.push(file);
  }
  renderStyles();
}

function renderStyles() {
  const box = $("style-thumbs");
  box.replaceChildren(...state.styles.map((file, i) => {
    const remove = el("button", { type: "button", textContent: "×", title: `remove ${file.name}` });
    remove.setAttribute("aria-label", `remove ${file.name}`);
    remove.onclick = () => { state.styles.splice(i, 1); renderStyles(); };
    return el("div", { className: "thumb", title: file.name },
      el("img", { src: URL.createObjectURL(file), alt: file.name }), remove);
  }));
  const n = state.styles.length;
  $("style-count").textContent = n ? `${n} image${n > 1 ? "s" : ""}${n > 1 ? ", blended equally" : ""}` : "";
  updateStart();
}

function wireDrop(zone, onFiles) {
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    onFiles([...e.dataTransfer.files]);
  });
}

function updateStart() {
  $("start").disabled = !(state.info && state.content && state.styles.length);
  $("form-error").hidden = true;
}

function showFormError(message) {
  const box = $("form-error");
  box.textContent = message;
  box.hidden = false;
}

// ---------------------------------------------------------------- submitting

async function start() {
  const button = $("start");
  button.disabled = true;
  button.textContent = "Uploading…";
  try {
    const form = new FormData();
    form.append("content", state.content, state.content.name);
    for (const s of state.styles) form.append("style", s, s.name);
    for (const [name, get] of state.controls) {
      const value = get();
      if (value !== "") form.append(name, value);
    }
    const job = await apiJson("/api/jobs", { method: "POST", body: form });
    showJob(job);
    refreshJobs();
  } catch (err) {
    showFormError(err.message);
  } finally {
    button.textContent = "Stylize";
    updateStart();
  }
}

// ---------------------------------------------------------------- the stage

const ACTIVE = new Set(["queued", "running"]);

async function showJob(job) {
  if (state.stream) state.stream.abort();
  state.stream = null;
  const switched = !state.job || state.job.id !== job.id;
  state.job = job;
  history.replaceState(null, "", `#job=${job.id}`);
  if (switched) {
    $("live-image").hidden = true;
    $("placeholder").hidden = false;
  }
  await renderJob(job);
  if (ACTIVE.has(job.state)) followJob(job.id);
  markActiveCard();
}

async function renderJob(job) {
  if (!state.job || state.job.id !== job.id) return;
  state.job = job;
  const badge = $("job-state");
  badge.hidden = false;
  badge.className = `badge ${job.state}`;
  badge.textContent = job.state;
  $("stage-title").textContent = jobTitle(job);

  const progress = $("progress");
  progress.hidden = false;
  progress.classList.toggle("queued", job.state === "queued");
  if (job.state === "queued") {
    setProgress(0, job.queue_position ? `Waiting in the queue — position ${job.queue_position}` : "Waiting in the queue", "", "");
  } else if (job.state === "running" && job.progress) {
    updateProgress(job.progress);
  } else if (job.state === "running") {
    setProgress(0, "Starting — loading the network…", "", "");
  } else if (job.state === "succeeded") {
    const seconds = job.started && job.finished ? (new Date(job.finished) - new Date(job.started)) / 1000 : null;
    setProgress(100, `Done — ${job.iterations} iterations`, seconds != null ? `in ${fmtTime(seconds)}` : "",
      job.losses ? lossSummary(job.losses) : "");
  } else {
    progress.hidden = true;
  }

  const error = $("job-error");
  error.hidden = !job.error || job.state === "succeeded";
  error.textContent = job.error || "";

  $("cancel").hidden = !ACTIVE.has(job.state);
  $("retry").hidden = !["failed", "cancelled", "interrupted"].includes(job.state);
  $("reuse").hidden = false;
  const download = $("download"), record = $("record");
  download.hidden = record.hidden = job.state !== "succeeded";
  if (job.state === "succeeded") {
    const [resultUrl, recordUrl] = await Promise.all([imageUrl(job.links.result), imageUrl(job.links.record)]);
    download.href = resultUrl;
    download.download = `nstyle-${job.id}.png`;
    record.href = recordUrl;
    record.download = `nstyle-${job.id}.json`;
    setImage(resultUrl);
  } else if (!ACTIVE.has(job.state) && job.links.preview) {
    setImage(await imageUrl(job.links.preview));
  } else if (!ACTIVE.has(job.state) || $("live-image").hidden) {
    // nothing painted yet (or ever): show the photo it starts from
    setImage(await imageUrl(job.inputs.content.thumbnail));
  }
}

function jobTitle(job) {
  const c = job.inputs.content.name, s = job.inputs.styles.map((x) => x.name).join(" + ");
  return `${c} in the style of ${s}`;
}

function setImage(src) {
  const img = $("live-image");
  img.onload = () => fitImage(img);
  img.src = src;
  img.hidden = false;
  $("placeholder").hidden = true;
}

// Small results (a quick 256 px run) are scaled up to use the stage; pixels stay sharp
// when the scale is large, since a blurred preview hides what the optimizer is doing.
function fitImage(img) {
  const box = $("canvas").getBoundingClientRect();
  const w = img.naturalWidth, h = img.naturalHeight;
  if (!w || !h || !box.width) return;
  const scale = Math.min((box.width - 40) / w, (Math.min(innerHeight * 0.64, 720) - 20) / h, 4);
  img.style.width = scale > 1 ? `${Math.round(w * scale)}px` : "";
  img.classList.toggle("small", scale >= 3);
}
window.addEventListener("resize", () => fitImage($("live-image")));

function setProgress(percent, text, eta, losses) {
  $("bar-fill").style.width = `${percent}%`;
  $("bar").setAttribute("aria-valuenow", String(Math.round(percent)));
  $("progress-text").textContent = text;
  $("eta-text").textContent = eta;
  $("loss-text").textContent = losses;
}

function lossSummary(losses) {
  let content = 0, style = 0;
  for (const [k, v] of Object.entries(losses)) {
    if (k.startsWith("content.")) content += v;
    else if (k.startsWith("style.")) style += v;
  }
  const parts = [`loss ${fmtSci(losses.total)}`, `content ${fmtSci(content)}`, `style ${fmtSci(style)}`];
  if ("tv" in losses) parts.push(`tv ${fmtSci(losses.tv)}`);
  return parts.join(" · ");
}

function updateProgress(p) {
  const eta = p.eta != null ? `about ${fmtTime(p.eta)} left` : "";
  setProgress(p.percent, `Iteration ${p.iteration} / ${p.iterations}`, eta, p.losses.total != null ? lossSummary(p.losses) : "");
}

// Reads the server-sent events of one job with fetch (so the token header can be sent),
// and reconnects if the connection drops before the job ends.
async function followJob(jobId) {
  const controller = new AbortController();
  state.stream = controller;
  while (!controller.signal.aborted) {
    try {
      const response = await api(`/api/jobs/${jobId}/events`, { signal: controller.signal });
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const chunk = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          const finished = handleEvent(jobId, chunk);
          if (finished) return;
        }
      }
    } catch (err) {
      if (controller.signal.aborted) return;
      if (err instanceof ApiError && err.status === 404) return;
    }
    await new Promise((r) => setTimeout(r, 2000));
  }
}

function handleEvent(jobId, chunk) {
  let event = "message", data = "";
  for (const line of chunk.split("\n")) {
    if (line.startsWith("event:")) event = line.slice(6).trim();
    else if (line.startsWith("data:")) data += line.slice(5).trim();
  }
  if (!data || !state.job || state.job.id !== jobId) return false;
  const payload = JSON.parse(data);
  if (event === "state") renderJob(payload);
  else if (event === "progress") updateProgress(payload);
  else if (event === "preview") setImage(payload.image);
  else if (event === "end") { renderJob(payload); refreshJobs(); return true; }
  else if (event === "deleted") { clearStage(); refreshJobs(); return true; }
  return false;
}

function clearStage() {
  if (state.stream) state.stream.abort();
  state.job = null;
  history.replaceState(null, "", location.pathname);
  $("job-state").hidden = true;
  $("stage-title").textContent = "Result";
  $("live-image").hidden = true;
  $("placeholder").hidden = false;
  $("progress").hidden = true;
  $("job-error").hidden = true;
  for (const id of ["cancel", "retry", "reuse", "download", "record"]) $(id).hidden = true;
}

async function reuseJob(job) {
  // the job's own uploads and options back in the form, to tweak and run again
  const fetchFile = async (info) => {
    const blob = await (await api(info.original)).blob();
    return new File([blob], info.name, { type: blob.type });
  };
  setContent(await fetchFile(job.inputs.content));
  state.styles = [];
  addStyles(await Promise.all(job.inputs.styles.map(fetchFile)));
  for (const [name, set] of state.setters) {
    const given = job.options[name];
    if (given !== undefined) set(given);
    else {
      const opt = state.info.options.find((o) => o.name === name);
      if (MAIN_OPTIONS.some((m) => m.name === name)) set(opt.default);
      else set(opt.choices ? opt.default : "");
    }
  }
  window.scrollTo({ top: 0, behavior: "smooth" });
}

// ---------------------------------------------------------------- past jobs

let refreshTimer = null;

async function refreshJobs() {
  clearTimeout(refreshTimer);
  let list;
  try {
    list = await apiJson("/api/jobs?limit=60");
  } catch (err) {
    setServer(false, err.message);
    refreshTimer = setTimeout(refreshJobs, 5000);
    return;
  }
  setServer(true, `${list.running} running · ${list.queued} queued`);
  $("history-count").textContent = list.total ? `${list.total} job${list.total > 1 ? "s" : ""}` : "";
  $("jobs-empty").hidden = list.total > 0;
  const cards = await Promise.all(list.jobs.map(jobCard));
  $("jobs").replaceChildren(...cards);
  markActiveCard();
  // poll while something is moving; the stage itself follows its job by events
  refreshTimer = setTimeout(refreshJobs, list.running || list.queued ? 3000 : 15000);
}

async function jobCard(job) {
  const picture = job.state === "succeeded" ? job.links.result
    : job.links.preview || job.inputs.content.thumbnail;
  const strip = el("div", { className: "styles-strip" });
  for (const s of job.inputs.styles.slice(0, 4)) {
    strip.append(el("img", { src: await imageUrl(s.thumbnail), alt: "", title: s.name }));
  }
  const del = el("button", { type: "button", className: "del", textContent: "×", title: "delete this job" });
  del.setAttribute("aria-label", "delete job");
  del.onclick = async (e) => {
    e.stopPropagation();
    if (!confirm("Delete this job and its images?")) return;
    await api(job.links.self, { method: "DELETE" });
    if (state.job && state.job.id === job.id) clearStage();
    refreshJobs();
  };
  const size = job.output_size ? `${job.output_size[0]}×${job.output_size[1]}`
    : `${job.config.image.size} px`;
  const card = el("div", { className: "job", tabIndex: 0, role: "button" },
    el("div", { className: "pic" }, el("img", { src: await imageUrl(picture), alt: "", loading: "lazy" }), strip),
    el("div", { className: "info" },
      el("div", { className: "row" },
        el("span", { className: `badge ${job.state}`, textContent: job.state }),
        el("span", { className: "when", textContent: fmtAgo(job.created) })),
      el("div", { className: "when", textContent: `${size} · ${job.config.optim.iterations} it · ${job.inputs.content.name}` })),
    del);
  card.dataset.id = job.id;
  card.setAttribute("aria-label", `${job.state} job ${jobTitle(job)}`);
  const open = () => showJob(job);
  card.onclick = open;
  card.onkeydown = (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); open(); } };
  return card;
}

function markActiveCard() {
  for (const card of document.querySelectorAll(".job")) {
    card.classList.toggle("active", Boolean(state.job) && card.dataset.id === state.job.id);
  }
}

function setServer(ok, text) {
  const pill = $("server-status");
  pill.className = `server ${ok ? "ok" : "down"}`;
  pill.textContent = ok ? text : `server unreachable: ${text}`;
}

// ---------------------------------------------------------------- start-up

async function main() {
  const hash = new URLSearchParams(location.hash.slice(1));
  if (hash.get("token")) {  // #token=... : a link that logs in; the fragment never reaches the server
    state.token = hash.get("token");
    sessionStorage.setItem("nstyle-token", state.token);
    history.replaceState(null, "", location.pathname);
  }
  $("content-input").addEventListener("change", (e) => setContent(e.target.files[0]));
  $("style-input").addEventListener("change", (e) => { addStyles([...e.target.files]); e.target.value = ""; });
  wireDrop($("content-drop"), (files) => setContent(files.find(isImage)));
  wireDrop($("style-drop"), addStyles);
  $("start").onclick = start;
  $("cancel").onclick = async () => renderJob(await apiJson(state.job.links.cancel, { method: "POST" }));
  $("retry").onclick = async () => showJob(await apiJson(state.job.links.retry, { method: "POST" }));
  $("reuse").onclick = () => reuseJob(state.job);

  try {
    state.info = await apiJson("/api/info");
  } catch (err) {
    setServer(false, err.message);
    return;
  }
  buildControls(state.info);
  const formats = state.info.limits.formats.join(", ");
  $("content-drop").title = `${formats}; up to ${fmtBytes(state.info.limits.max_upload_bytes)}`;
  updateStart();
  await refreshJobs();
  const wanted = hash.get("job");
  if (wanted) {
    try { showJob(await apiJson(`/api/jobs/${wanted}`)); } catch (_) { clearStage(); }
  }
}

main();
